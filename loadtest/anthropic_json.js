// Anthropic Messages, JSON response: POST ${BASE_URL}/v1/messages (claude-sonnet-4-5-20250929).
// Sends x-api-key + anthropic-version. Checks: status 200 and a `usage` object. Env: see common.js.
import http from 'k6/http';
import { options as common, BASE_URL, ANTHROPIC_HEADERS, anthropicBody, checkJson } from './common.js';

export const options = common();
const BODY = anthropicBody(false);

export default function () {
  const r = http.post(`${BASE_URL}/v1/messages`, BODY, { headers: ANTHROPIC_HEADERS });
  checkJson(r);
}
