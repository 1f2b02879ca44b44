// Shared settings for the cheapmodel k6 scripts (imported by openai_*.js and anthropic_*.js).
//
// Environment:
//   BASE_URL  gateway (or mock / proxy) base URL      default http://127.0.0.1:8080
//   CM_KEY    caller key                              default cm_demo_key_not_secret
//   RATE      requests per second (constant-arrival-rate)   default 500
//   DURATION  run length, k6 duration ("10s", "1m"; a bare number means seconds)  default 10s
//   VUS       pre-allocated VUs (maxVUs is 4x)        default max(10, RATE/10)
//   MODEL     model name (e.g. gpt-5.5 in anthropic_*.js measures a translated route)
import { check } from 'k6';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const CM_KEY = __ENV.CM_KEY || 'cm_demo_key_not_secret';

function duration() {
  const d = __ENV.DURATION || '10s';
  return /^\d+$/.test(d) ? `${d}s` : d;
}

export function options() {
  const rate = parseInt(__ENV.RATE || '500', 10);
  const vus = parseInt(__ENV.VUS || String(Math.max(10, Math.ceil(rate / 10))), 10);
  return {
    scenarios: {
      main: {
        executor: 'constant-arrival-rate',
        rate: rate,
        timeUnit: '1s',
        duration: duration(),
        preAllocatedVUs: vus,
        maxVUs: vus * 4,
        gracefulStop: '5s',
      },
    },
    thresholds: {
      http_req_failed: ['rate<0.01'],
      checks: ['rate>0.99'],
    },
    // p(99) is not in k6's default summary; compare.sh reads it from --summary-export.
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
    discardResponseBodies: false,
  };
}

export const OPENAI_HEADERS = {
  'Content-Type': 'application/json',
  Authorization: `Bearer ${CM_KEY}`,
};

export const ANTHROPIC_HEADERS = {
  'Content-Type': 'application/json',
  'x-api-key': CM_KEY,
  'anthropic-version': '2023-06-01',
};

export function openaiBody(stream) {
  const b = {
    model: __ENV.MODEL || 'gpt-5.5',
    messages: [{ role: 'user', content: 'Say hello in five words.' }],
    max_tokens: 32,
  };
  if (stream) b.stream = true;
  return JSON.stringify(b);
}

export function anthropicBody(stream) {
  const b = {
    model: __ENV.MODEL || 'claude-sonnet-4-5-20250929',
    max_tokens: 32,
    messages: [{ role: 'user', content: 'Say hello in five words.' }],
  };
  if (stream) b.stream = true;
  return JSON.stringify(b);
}

function hasUsage(r) {
  try {
    const j = r.json();
    return j !== null && typeof j === 'object' && j.usage !== undefined && j.usage !== null;
  } catch (_) {
    return false;
  }
}

export function checkJson(r) {
  return check(r, {
    'status 200': (x) => x.status === 200,
    'body has usage': (x) => hasUsage(x),
  });
}

export function checkStream(r, marker) {
  return check(r, {
    'status 200': (x) => x.status === 200,
    [`body has ${marker}`]: (x) => typeof x.body === 'string' && x.body.indexOf(marker) !== -1,
  });
}
