// The OpenAI-compatible chat endpoint, streamed: fetch + a small server-sent-events reader.

export class ApiError extends Error {
  constructor(message, { status = 0, retryAfter = null, code = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: the network failed before any HTTP answer
    this.retryAfter = retryAfter;
    this.code = code;
  }
}

function headers(apiKey) {
  const h = { "Content-Type": "application/json" };
  if (apiKey) h.Authorization = `Bearer ${apiKey}`;
  return h;
}

async function errorFrom(response) {
  let message = `HTTP ${response.status}`;
  let code = null;
  try {
    const body = await response.json();
    message = body?.error?.message || message;
    code = body?.error?.code || null;
  } catch {
    // not JSON: keep the status line
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new ApiError(message, { status: response.status, retryAfter: Number.isFinite(retry) ? retry : null, code });
}

export async function fetchConfig() {
  const response = await fetch("/api/config");
  if (!response.ok) throw await errorFrom(response);
  return response.json();
}

// Yields the JSON payload of every `data:` event until [DONE].
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = block
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

// Streams one completion. onDelta(text) gets each piece; resolves to
// {finishReason, usage, ttftMs, totalMs}. Aborting `signal` cancels the request on the server.
export async function streamChat({ body, apiKey, signal, onDelta }) {
  const started = performance.now();
  let response;
  try {
    response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(apiKey),
      body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(err.message || "network error");
  }
  if (!response.ok) throw await errorFrom(response);
  let ttftMs = null;
  let finishReason = null;
  let usage = null;
  try {
    for await (const event of sseEvents(response.body)) {
      if (event.error) throw new ApiError(event.error.message, { status: 500, code: event.error.code });
      if (event.usage) usage = event.usage;
      for (const choice of event.choices || []) {
        const text = choice.delta?.content;
        if (text) {
          ttftMs ??= performance.now() - started;
          onDelta(text);
        }
        if (choice.finish_reason) finishReason = choice.finish_reason;
      }
    }
  } catch (err) {
    if (err.name === "AbortError" || err instanceof ApiError) throw err;
    throw new ApiError(err.message || "network error");
  }
  return { finishReason, usage, ttftMs, totalMs: performance.now() - started };
}
