// Task flow load test: submit a media task, poll GET /v1/tasks/{id} until it finishes.
// Each VU loops: submit (image, video or audio, round robin) -> poll every POLL_MS until completed
// or failed (bounded by MAX_POLLS) -> check the final object.
//
//   k6 run loadtest/tasks.js                               # against the demo (bash conf/demo.sh)
//   BASE_URL=http://127.0.0.1:8080 VUS=20 DURATION=30s k6 run loadtest/tasks.js
//
// Environment: BASE_URL, CM_KEY (default: the demo key), VUS (default 5), DURATION (default 20s),
// POLL_MS (default 1100: the gateway reuses a poll answer for 1 s), MAX_POLLS (default 10).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const CM_KEY = __ENV.CM_KEY || 'cm_demo_key_not_secret';
const POLL_MS = parseInt(__ENV.POLL_MS || '1100', 10);
const MAX_POLLS = parseInt(__ENV.MAX_POLLS || '10', 10);

const completed = new Counter('tasks_completed');
const unfinished = new Counter('tasks_unfinished');
const timeToDone = new Trend('task_time_to_done', true);

export const options = {
  scenarios: {
    flow: {
      executor: 'constant-vus',
      vus: parseInt(__ENV.VUS || '5', 10),
      duration: __ENV.DURATION || '20s',
      gracefulStop: `${Math.ceil((POLL_MS * MAX_POLLS) / 1000) + 5}s`,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    tasks_unfinished: ['count<1'],
  },
};

const JOBS = [
  ['/v1/images/generations', { model: 'gpt-image-2', prompt: 'A cinematic wide-angle shot of a futuristic city skyline', size: '16:9', resolution: '2k' }],
  ['/v1/videos/generations', { model: 'veo3-fast', prompt: 'Waves at dusk', duration: 8 }],
  ['/v1/audios/generations', { model: 'suno-v4', prompt: 'A calm piano loop', duration: 30 }],
];

const headers = { Authorization: `Bearer ${CM_KEY}`, 'content-type': 'application/json' };

export default function () {
  const [path, body] = JOBS[(__VU + __ITER) % JOBS.length];
  const started = Date.now();
  const r = http.post(`${BASE_URL}${path}`, JSON.stringify(body), { headers, tags: { name: 'submit' } });
  const task = r.status === 200 ? r.json() : null;
  if (!check(r, {
    'submit 200': (res) => res.status === 200,
    'submit pending with an id': () => task !== null && task.status === 'pending' && String(task.id).startsWith('task_'),
  })) {
    return;
  }
  for (let i = 0; i < MAX_POLLS; i++) {
    sleep(POLL_MS / 1000);
    const p = http.get(`${BASE_URL}/v1/tasks/${task.id}`, { headers, tags: { name: 'poll' } });
    const t = p.status === 200 ? p.json() : null;
    check(p, { 'poll 200': (res) => res.status === 200 });
    if (t && (t.status === 'completed' || t.status === 'failed')) {
      check(t, {
        'completed with results': (x) => x.status === 'completed' && Array.isArray(x.results) && x.results.length > 0,
        'cost reported': (x) => x.usage && typeof x.usage.cost_usd === 'number',
      });
      completed.add(1);
      timeToDone.add(Date.now() - started);
      return;
    }
  }
  unfinished.add(1);
}
