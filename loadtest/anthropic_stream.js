// Anthropic Messages, SSE stream: POST ${BASE_URL}/v1/messages with "stream": true.
// Checks: status 200 and the body contains the `message_stop` event. Env: see common.js.
import http from 'k6/http';
import { options as common, BASE_URL, ANTHROPIC_HEADERS, anthropicBody, checkStream } from './common.js';

export const options = common();
const BODY = anthropicBody(true);

export default function () {
  const r = http.post(`${BASE_URL}/v1/messages`, BODY, { headers: ANTHROPIC_HEADERS });
  checkStream(r, 'message_stop');
}
