// OpenAI chat completion, SSE stream: POST ${BASE_URL}/v1/chat/completions with "stream": true.
// Checks: status 200 and the body contains the final `data: [DONE]`. Env: see common.js.
import http from 'k6/http';
import { options as common, BASE_URL, OPENAI_HEADERS, openaiBody, checkStream } from './common.js';

export const options = common();
const BODY = openaiBody(true);

export default function () {
  const r = http.post(`${BASE_URL}/v1/chat/completions`, BODY, { headers: OPENAI_HEADERS });
  checkStream(r, '[DONE]');
}
