// OpenAI chat completion, JSON response: POST ${BASE_URL}/v1/chat/completions (gpt-5.5).
// Checks: status 200 and a `usage` object in the body. Env: see common.js.
import http from 'k6/http';
import { options as common, BASE_URL, OPENAI_HEADERS, openaiBody, checkJson } from './common.js';

export const options = common();
const BODY = openaiBody(false);

export default function () {
  const r = http.post(`${BASE_URL}/v1/chat/completions`, BODY, { headers: OPENAI_HEADERS });
  checkJson(r);
}
