// The page: one image, a multi-turn conversation about it, answers streamed with boxes drawn.

import { ApiError, fetchConfig, streamChat } from "./api.js";
import { boxesIn, colourFor, drawBoxes, parseAnswer } from "./boxes.js";
import { language, setLanguage, t, translatePage } from "./i18n.js";
import { formatBytes, ImageRejected, loadImageFile, wireImageInputs } from "./image.js";

const $ = (id) => document.getElementById(id);
const SETTINGS_KEY = "edgevlm.settings";
const API_KEY_KEY = "edgevlm.apiKey";

const state = {
  config: { model: "edgevlm-demo", max_image_bytes: 20 * 1024 * 1024, max_image_pixels: 40e6, auth_required: false },
  image: null,
  history: [],
  controller: null,
  conversation: 0, // bumped by newChat: a late answer never lands in the next conversation
  settings: loadSettings(),
  relabel: [], // functions that redraw language-dependent text of existing messages
};

function loadSettings() {
  const defaults = { temperature: 0, maxTokens: 256, systemPrompt: "" };
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
  } catch {
    saved = {};
  }
  return { ...defaults, ...saved, apiKey: localStorage.getItem(API_KEY_KEY) || "" };
}

function saveSettings() {
  const { apiKey, ...rest } = state.settings;
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(rest));
  if (apiKey) localStorage.setItem(API_KEY_KEY, apiKey);
  else localStorage.removeItem(API_KEY_KEY);
}

// --- status and errors ----------------------------------------------------------------------------
function showStatus(message) {
  $("status").textContent = message;
  $("status").hidden = !message;
}

function describeError(err) {
  if (!(err instanceof ApiError) || err.status === 0) return t("errNetwork");
  if (err.status === 401) return t("errAuth");
  if (err.status === 429 || (err.status === 503 && err.code !== "not_ready")) {
    return err.retryAfter ? t("errBusy", { s: err.retryAfter }) : t("errBusyNoTime");
  }
  if (err.status === 503) return t("errNotReady", { s: err.retryAfter ?? 5 });
  if (err.status === 413) return t("errTooLarge");
  return t("errServer", { msg: err.message });
}

// --- image ------------------------------------------------------------------------------------------
function showImageError(message) {
  $("image-error").textContent = message;
  $("image-error").hidden = !message;
}

async function useFile(file) {
  try {
    const image = await loadImageFile(file, state.config);
    showImageError("");
    setImage(image);
  } catch (err) {
    if (!(err instanceof ImageRejected)) throw err;
    showImageError(err.message);
  }
}

function setImage(image) {
  newChat();
  state.image = image;
  $("preview-img").src = image.dataUrl;
  $("preview-img").alt = image.name;
  $("preview").hidden = !image;
  fitPreview();
  renderImageMeta();
  $("question").focus();
}

// The image is scaled to fill the panel (small images up to 4x), keeping its aspect ratio, so
// the box layer over it lines up at any size.
function fitPreview() {
  const image = state.image;
  const img = $("preview-img");
  const width = $("preview").clientWidth;
  if (!image || !width) return;
  const scale = Math.min(width / image.width, (window.innerHeight * 0.6) / image.height, 4);
  img.style.width = `${Math.floor(image.width * scale)}px`;
  img.style.height = `${Math.floor(image.height * scale)}px`;
}

function renderImageMeta() {
  const image = state.image;
  $("image-meta").textContent = image ? t("imageMeta", { w: image.width, h: image.height, size: formatBytes(image.size) }) : "";
}

function removeImage() {
  newChat();
  state.image = null;
  $("preview").hidden = true;
  $("preview-img").removeAttribute("src");
}

// --- conversation -------------------------------------------------------------------------------------
function newChat() {
  state.conversation += 1;
  state.controller?.abort();
  state.history = [];
  state.relabel = [];
  $("log").replaceChildren();
  $("boxes").replaceChildren();
  $("empty-log").hidden = false;
  showStatus("");
}

function addMessage(role) {
  const item = document.createElement("li");
  item.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.dataset.i18n = role === "user" ? "you" : "assistant";
  who.textContent = t(who.dataset.i18n);
  const content = document.createElement("div");
  content.className = "content";
  const meta = document.createElement("div");
  meta.className = "meta";
  item.append(who, content, meta);
  $("log").append(item);
  $("empty-log").hidden = true;
  return { item, content, meta };
}

function renderAnswer(element, text) {
  element.dataset.text = text;
  const nodes = parseAnswer(text).map((segment) => {
    if (segment.kind === "text") return document.createTextNode(segment.text);
    const { box, index } = segment;
    const ref = document.createElement("span");
    ref.className = "box-ref";
    ref.style.setProperty("--box-colour", colourFor(index));
    ref.setAttribute("aria-label", t("boxLabel", { n: index + 1, ...box }));
    ref.textContent = `${t("box", { n: index + 1 })} [${box.x1}, ${box.y1}, ${box.x2}, ${box.y2}]`;
    return ref;
  });
  element.replaceChildren(...nodes);
}

function showBoxes(text) {
  const boxes = boxesIn(text);
  if (boxes.length) drawBoxes($("boxes"), boxes, (i) => t("box", { n: i + 1 }));
}

function userMessage(question) {
  if (state.history.length || !state.image) return { role: "user", content: question };
  return {
    role: "user",
    content: [
      { type: "image_url", image_url: { url: state.image.dataUrl } },
      { type: "text", text: question },
    ],
  };
}

function requestBody(message) {
  const messages = [];
  if (state.settings.systemPrompt.trim()) messages.push({ role: "system", content: state.settings.systemPrompt });
  messages.push(...state.history, message);
  return {
    model: state.config.model,
    messages,
    temperature: Number(state.settings.temperature),
    max_tokens: Number(state.settings.maxTokens),
  };
}

function metaText(result, chunks) {
  const parts = [];
  if (result.ttftMs != null) parts.push(t("ttft", { ms: Math.round(result.ttftMs) }));
  const tokens = result.usage?.completion_tokens ?? chunks;
  const decodeSeconds = (result.totalMs - (result.ttftMs ?? 0)) / 1000;
  if (tokens > 1 && decodeSeconds > 0) parts.push(t("speed", { tps: ((tokens - 1) / decodeSeconds).toFixed(1) }));
  parts.push(t("tokens", { n: tokens }));
  return parts.join(" · ");
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("log").setAttribute("aria-busy", String(busy));
}

async function ask(question) {
  question = question.trim();
  if (state.controller) return;
  if (!question) return showStatus(t("needQuestion"));
  if (!state.image && !state.history.length) return showStatus(t("needImage"));
  showStatus("");
  const message = userMessage(question);
  const mine = addMessage("user");
  mine.content.textContent = question;
  if (Array.isArray(message.content)) {
    const note = () => (mine.meta.textContent = t("imageAttached"));
    note();
    state.relabel.push(note);
  }
  const answer = addMessage("assistant");
  answer.item.classList.add("streaming");
  const controller = new AbortController();
  const conversation = state.conversation;
  const remember = (reply) => {
    if (state.conversation === conversation) state.history.push(message, { role: "assistant", content: reply });
  };
  state.controller = controller;
  setBusy(true);
  let text = "";
  let chunks = 0;
  try {
    const result = await streamChat({
      body: requestBody(message),
      apiKey: state.settings.apiKey,
      signal: controller.signal,
      onDelta: (delta) => {
        text += delta;
        chunks += 1;
        renderAnswer(answer.content, text);
        showBoxes(text);
      },
    });
    const note = () => (answer.meta.textContent = metaText(result, chunks));
    note();
    state.relabel.push(note);
    remember(text);
  } catch (err) {
    if (err.name === "AbortError") {
      const note = () => (answer.meta.textContent = t("stopped"));
      note();
      state.relabel.push(note);
      remember(text);
    } else {
      const problem = describeError(err);
      answer.item.classList.add("failed");
      answer.meta.textContent = problem;
      showStatus(problem);
    }
  } finally {
    answer.item.classList.remove("streaming");
    if (state.controller === controller) state.controller = null;
    setBusy(false);
  }
}

// --- settings -------------------------------------------------------------------------------------------
function openSettings() {
  const s = state.settings;
  $("temperature").value = s.temperature;
  $("temperature-value").textContent = s.temperature;
  $("max-tokens").value = s.maxTokens;
  $("system-prompt").value = s.systemPrompt;
  $("api-key").value = s.apiKey;
  $("settings").showModal();
}

function closeSettings() {
  if ($("settings").returnValue !== "save") return;
  const maxTokens = Number.parseInt($("max-tokens").value, 10);
  state.settings = {
    temperature: Number($("temperature").value),
    maxTokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : 256,
    systemPrompt: $("system-prompt").value,
    apiKey: $("api-key").value.trim(),
  };
  saveSettings();
  showStatus("");
}

// --- language -------------------------------------------------------------------------------------------
function renderExamples() {
  const buttons = t("exampleQuestions").map((question) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.textContent = question;
    button.addEventListener("click", () => ask(question));
    return button;
  });
  $("examples").replaceChildren(...buttons);
}

function renderLanguage() {
  translatePage();
  const other = language() === "zh" ? "en" : "zh";
  $("lang-toggle").textContent = other === "zh" ? "中文" : "English";
  $("lang-toggle").lang = other === "zh" ? "zh-CN" : "en";
  const mb = Math.round(state.config.max_image_bytes / (1024 * 1024));
  $("image-hint").textContent = t("hintLimits", { mb, mp: Math.round(state.config.max_image_pixels / 1e6) });
  renderExamples();
  renderImageMeta();
  for (const relabel of state.relabel) relabel();
  for (const item of $("log").querySelectorAll(".msg.assistant .content[data-text]")) {
    renderAnswer(item, item.dataset.text);
  }
}

// --- wiring ---------------------------------------------------------------------------------------------
function wire() {
  new ResizeObserver(fitPreview).observe($("preview"));
  window.addEventListener("resize", fitPreview);
  wireImageInputs({ input: $("image-input"), dropZone: $("drop-zone"), onFile: useFile });
  $("remove-image").addEventListener("click", removeImage);
  $("new-chat").addEventListener("click", () => {
    newChat();
    $("question").focus();
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("question").value;
    if (question.trim() && (state.image || state.history.length)) $("question").value = "";
    ask(question);
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => {
    state.controller?.abort();
    $("question").focus();
  });
  $("settings-button").addEventListener("click", openSettings);
  $("settings").addEventListener("close", closeSettings);
  $("temperature").addEventListener("input", () => ($("temperature-value").textContent = $("temperature").value));
  $("lang-toggle").addEventListener("click", () => {
    setLanguage(language() === "zh" ? "en" : "zh");
    renderLanguage();
  });
}

async function main() {
  wire();
  renderLanguage();
  try {
    state.config = { ...state.config, ...(await fetchConfig()) };
    $("model-name").textContent = state.config.model;
    renderLanguage();
  } catch (err) {
    showStatus(describeError(err));
  }
  document.body.dataset.ready = "true";
}

main();
