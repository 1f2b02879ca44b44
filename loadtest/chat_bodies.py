#!/usr/bin/env python3
"""Write the chat bodies translated.sh sends, both dialects, for a given model; with --agent, the
agent-sized OpenAI bodies bodies.sh sends.

    chat_bodies.py DIR OPENAI_MODEL ANTHROPIC_MODEL
    chat_bodies.py --agent DIR OPENAI_MODEL ANTHROPIC_MODEL

DIR/{openai,anthropic}-{small,10k}-{same,translated}.json. "small" is one short user turn; "10k" is
a ~10 KB conversation with a system prompt, tool definitions and repeated tool-call round trips
(the shape of benches/translate.rs). "same" bodies name the model of the caller's own dialect,
"translated" ones the other dialect's model, so the gateway translates them.

--agent writes DIR/openai-{85k,1m}-{same,translated}.json: a coding agent's request (the shape
Claude Code sends, in the OpenAI dialect): `model` first, a long system prompt, 25 tool schemas with
described parameters, and tool-call rounds with file contents until the size is reached.
"""
import json
import sys


def openai_body(model: str, size: int) -> dict:
    messages = [{"role": "system", "content": "You are a careful assistant. Answer briefly."}]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
              "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                             "required": ["location"]}}}]
    body = {"model": model, "messages": messages, "max_tokens": 64}
    if size == 0:
        messages.append({"role": "user", "content": "Say hello in five words."})
        return body
    body["tools"] = tools
    i = 0
    while len(json.dumps(body)) < size:
        messages += [
            {"role": "user", "content": f'Question {i}: what is the weather in "Paris" today?'},
            {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{i}", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"location": "Paris"})}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps({"temp": 21, "sky": "clear"})},
            {"role": "assistant", "content": f"It is 21 degrees and clear in Paris ({i})."},
        ]
        i += 1
    messages.append({"role": "user", "content": "And tomorrow?"})
    return body


def anthropic_body(model: str, size: int) -> dict:
    body = {"model": model, "max_tokens": 64, "system": "You are a careful assistant. Answer briefly.", "messages": []}
    messages = body["messages"]
    if size == 0:
        messages.append({"role": "user", "content": "Say hello in five words."})
        return body
    body["tools"] = [{"name": "get_weather", "description": "Weather for a city",
                      "input_schema": {"type": "object", "properties": {"location": {"type": "string"}},
                                       "required": ["location"]}}]
    i = 0
    while len(json.dumps(body)) < size:
        messages += [
            {"role": "user", "content": f'Question {i}: what is the weather in "Paris" today?'},
            {"role": "assistant", "content": [{"type": "tool_use", "id": f"toolu_{i}", "name": "get_weather",
                                               "input": {"location": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"toolu_{i}",
                                          "content": json.dumps({"temp": 21, "sky": "clear"})}]},
            {"role": "assistant", "content": f"It is 21 degrees and clear in Paris ({i})."},
        ]
        i += 1
    messages.append({"role": "user", "content": "And tomorrow?"})
    return body


def agent_body(model: str, size: int) -> dict:
    tools = []
    for t in range(25):
        props = {f"arg_{p}": {"type": "string", "description": f"Argument {p} of tool {t}: " + "what it means. " * 6}
                 for p in range(6)}
        tools.append({"type": "function", "function": {
            "name": f"tool_{t}", "description": f"Tool {t} of the agent. " + "It does one careful thing. " * 20,
            "parameters": {"type": "object", "properties": props, "required": ["arg_0"]}}})
    messages = [{"role": "system", "content": "You are a coding agent. " + "Follow the project's rules. " * 200},
                {"role": "user", "content": "Fix the failing test in src/lib.rs."}]
    body = {"model": model, "messages": messages, "tools": tools, "max_tokens": 1024, "stream": False}
    line = 'fn example(x: u32) -> u32 { x + 1 } // "quoted" and \\escaped\n'
    i = 0
    while len(json.dumps(body)) < size:
        file_text = line * min(400, max(1, (size - len(json.dumps(body))) // len(line)))
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [{"id": f"call_{i}", "type": "function",
             "function": {"name": "tool_3", "arguments": json.dumps({"arg_0": f"src/file_{i}.rs"})}}]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": file_text},
        ]
        i += 1
    messages.append({"role": "user", "content": "Now run the tests."})
    return body


def main() -> int:
    if sys.argv[1] == "--agent":
        out, openai_model, anthropic_model = sys.argv[2:5]
        for size_name, size in (("85k", 85 * 1024), ("1m", 1024 * 1024)):
            for kind, model in (("same", openai_model), ("translated", anthropic_model)):
                with open(f"{out}/openai-{size_name}-{kind}.json", "w") as f:
                    json.dump(agent_body(model, size), f, separators=(",", ":"))
        return 0
    out, openai_model, anthropic_model = sys.argv[1:4]
    for size_name, size in (("small", 0), ("10k", 10 * 1024)):
        for kind, oa_model, an_model in (("same", openai_model, anthropic_model), ("translated", anthropic_model, openai_model)):
            with open(f"{out}/openai-{size_name}-{kind}.json", "w") as f:
                json.dump(openai_body(oa_model, size), f, separators=(",", ":"))
            with open(f"{out}/anthropic-{size_name}-{kind}.json", "w") as f:
                json.dump(anthropic_body(an_model, size), f, separators=(",", ":"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
