"""The official OpenAI and Anthropic Python SDKs as agents use them, against the router.

Run by tests/router/sdk.rs with OPENAI_BASE_URL, ANTHROPIC_BASE_URL and the placeholder keys the
operator gives agent containers. Prints one JSON object: each scenario's result, or the error
the SDK raised, for the Rust test to check.
"""

import json
import sys
import traceback

import anthropic
import openai

WEATHER_OPENAI = [{
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}]
WEATHER_ANTHROPIC = [{
    "name": "weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}]
HELLO = [{"role": "user", "content": "Say hello."}]


def openai_chat(client):
    answer = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    details = answer.usage.prompt_tokens_details
    return {
        "text": answer.choices[0].message.content,
        "finish_reason": answer.choices[0].finish_reason,
        "prompt_tokens": answer.usage.prompt_tokens,
        "cached_tokens": details.cached_tokens if details else None,
    }


def openai_stream(client):
    text, usage, finish = "", None, None
    stream = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage.prompt_tokens
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return {"text": text, "finish_reason": finish, "prompt_tokens": usage}


def openai_tools(client):
    answer = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=WEATHER_OPENAI,
        parallel_tool_calls=False,
    )
    call = answer.choices[0].message.tool_calls[0]
    return {
        "name": call.function.name,
        "arguments": json.loads(call.function.arguments),
        "finish_reason": answer.choices[0].finish_reason,
    }


def anthropic_create(client):
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, system="You are terse.", messages=HELLO
    )
    return {
        "text": "".join(block.text for block in message.content if block.type == "text"),
        "stop_reason": message.stop_reason,
        "input_tokens": message.usage.input_tokens,
        "output_tokens": message.usage.output_tokens,
    }


def anthropic_stream(client):
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=256, messages=HELLO
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    return {
        "text": text,
        "final_text": "".join(b.text for b in final.content if b.type == "text"),
        "stop_reason": final.stop_reason,
        "input_tokens": final.usage.input_tokens,
        "output_tokens": final.usage.output_tokens,
    }


def anthropic_tools(client):
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        tools=WEATHER_ANTHROPIC,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    call = next(block for block in message.content if block.type == "tool_use")
    follow_up = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        tools=WEATHER_ANTHROPIC,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [block.model_dump() for block in message.content]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]},
        ],
    )
    return {
        "name": call.name,
        "input": call.input,
        "stop_reason": message.stop_reason,
        "follow_up_stop_reason": follow_up.stop_reason,
    }


SCENARIOS = {
    "openai_chat": (openai_chat, "openai"),
    "openai_stream": (openai_stream, "openai"),
    "openai_tools": (openai_tools, "openai"),
    "anthropic_create": (anthropic_create, "anthropic"),
    "anthropic_stream": (anthropic_stream, "anthropic"),
    "anthropic_tools": (anthropic_tools, "anthropic"),
}


def main():
    # Both SDKs read their base URL and key from the environment, as in an agent container.
    clients = {
        "openai": openai.OpenAI(max_retries=0, timeout=20),
        "anthropic": anthropic.Anthropic(max_retries=0, timeout=20),
    }
    results = {}
    for name in sys.argv[1:] or SCENARIOS:
        scenario, sdk = SCENARIOS[name]
        try:
            results[name] = scenario(clients[sdk])
        except Exception as error:  # the test reports what the SDK raised
            results[name] = {
                "error": type(error).__name__,
                "status": getattr(error, "status_code", None),
                "body": getattr(error, "body", None),
                "trace": traceback.format_exc(limit=3),
            }
    results["versions"] = {"openai": openai.__version__, "anthropic": anthropic.__version__}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
