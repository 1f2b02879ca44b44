-- wrk script for compare.sh: POST the OpenAI JSON chat request (gpt-5.5) with the caller key.
--   wrk -t1 -c64 -d10s -s post.lua http://127.0.0.1:PORT
-- CM_KEY (env) overrides the demo key; CM_MODEL (env) the model, e.g. claude-sonnet-4-5-20250929
-- for the translated route (OpenAI caller, Anthropic-dialect upstream). At the end it prints one
-- machine-readable line:
--   WRK_JSON {"requests":..,"duration_us":..,"rps":..,"non2xx":..,"errors":..,"p50_us":..,"p99_us":..}
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("CM_KEY") or "cm_demo_key_not_secret")
wrk.body = '{"model":"' .. (os.getenv("CM_MODEL") or "gpt-5.5") .. '","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}'

done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"rps":%.1f,"non2xx":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    e.status, errors, latency:percentile(50), latency:percentile(99)))
end
