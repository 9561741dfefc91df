// UI strings in English and Chinese. Everything is set with textContent, never as HTML.

const STRINGS = {
  en: {
    skipToQuestion: "Skip to question",
    pageActions: "Page actions",
    newChat: "New chat",
    settings: "Settings",
    imageHeading: "Image",
    dropTitle: "Choose an image",
    dropSub: "or drag and drop it here, or paste it (Ctrl+V)",
    removeImage: "Remove image",
    chatHeading: "Conversation",
    emptyLog: "Add an image, then ask a question about it.",
    examples: "Try:",
    questionLabel: "Your question",
    questionPlaceholder: "Ask about the image… (Enter sends, Shift+Enter adds a line)",
    send: "Send",
    stop: "Stop",
    temperature: "Temperature",
    maxTokens: "Max tokens",
    systemPrompt: "System prompt",
    apiKey: "API key",
    apiKeyHint: "Stored in this browser only.",
    save: "Save",
    cancel: "Cancel",
    you: "You",
    assistant: "Model",
    imageAttached: "image attached",
    hintLimits: "JPEG, PNG, WebP, GIF or BMP, up to {mb} MB and {mp} megapixels.",
    imageMeta: "{w} × {h} px, {size}",
    notImage: "“{name}” is not an image this page can use. Choose a JPEG, PNG, WebP, GIF or BMP file.",
    unreadable: "“{name}” could not be read as an image. It may be damaged.",
    tooBig: "This image is {size}; the limit is {mb} MB. Choose a smaller image.",
    tooManyPixels: "This image is {w} × {h} pixels; the limit is {mp} megapixels.",
    needImage: "Add an image first.",
    needQuestion: "Type a question.",
    ttft: "first token {ms} ms",
    speed: "{tps} tokens/s",
    tokens: "{n} tokens",
    stopped: "Stopped.",
    errAuth: "The server needs an API key, or the key is wrong. Set it in Settings.",
    errBusy: "The server is busy. Retry in {s} s.",
    errBusyNoTime: "The server is busy. Retry in a few seconds.",
    errNotReady: "The model is still loading. Retry in {s} s.",
    errTooLarge: "The request is too large. Use a smaller image.",
    errNetwork: "Cannot reach the server. Check the connection and try again.",
    errServer: "The server could not answer: {msg}",
    box: "box {n}",
    boxLabel: "Box {n}: x {x1}–{x2}, y {y1}–{y2} (of 1000)",
    exampleQuestions: [
      "What colour is the circle?",
      "How many shapes are there?",
      "Where is the red square?",
      "Describe the image.",
    ],
  },
  zh: {
    skipToQuestion: "跳到提问",
    pageActions: "页面操作",
    newChat: "新对话",
    settings: "设置",
    imageHeading: "图片",
    dropTitle: "选择图片",
    dropSub: "或拖放到这里，或粘贴（Ctrl+V）",
    removeImage: "移除图片",
    chatHeading: "对话",
    emptyLog: "先添加一张图片，再就图片提问。",
    examples: "试试：",
    questionLabel: "你的问题",
    questionPlaceholder: "就图片提问…（Enter 发送，Shift+Enter 换行）",
    send: "发送",
    stop: "停止",
    temperature: "温度",
    maxTokens: "最大 token 数",
    systemPrompt: "系统提示词",
    apiKey: "API 密钥",
    apiKeyHint: "只保存在此浏览器中。",
    save: "保存",
    cancel: "取消",
    you: "你",
    assistant: "模型",
    imageAttached: "已附图片",
    hintLimits: "支持 JPEG、PNG、WebP、GIF、BMP，最大 {mb} MB、{mp} 百万像素。",
    imageMeta: "{w} × {h} 像素，{size}",
    notImage: "“{name}”不是可用的图片。请选择 JPEG、PNG、WebP、GIF 或 BMP 文件。",
    unreadable: "无法读取“{name}”，文件可能已损坏。",
    tooBig: "图片大小为 {size}，上限是 {mb} MB。请选择更小的图片。",
    tooManyPixels: "图片为 {w} × {h} 像素，上限是 {mp} 百万像素。",
    needImage: "请先添加图片。",
    needQuestion: "请输入问题。",
    ttft: "首个 token {ms} 毫秒",
    speed: "{tps} token/秒",
    tokens: "{n} 个 token",
    stopped: "已停止。",
    errAuth: "服务器需要 API 密钥，或密钥错误。请在“设置”中填写。",
    errBusy: "服务器繁忙，请 {s} 秒后重试。",
    errBusyNoTime: "服务器繁忙，请稍后重试。",
    errNotReady: "模型仍在加载，请 {s} 秒后重试。",
    errTooLarge: "请求过大，请使用更小的图片。",
    errNetwork: "无法连接服务器，请检查网络后重试。",
    errServer: "服务器无法回答：{msg}",
    box: "框 {n}",
    boxLabel: "框 {n}：x {x1}–{x2}，y {y1}–{y2}（共 1000）",
    exampleQuestions: ["圆形是什么颜色?", "图中有几个图形?", "红色正方形在哪里?", "描述这张图片。"],
  },
};

const STORAGE_KEY = "edgevlm.lang";
let current = pickLanguage();

function pickLanguage() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved in STRINGS) return saved;
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

export function language() {
  return current;
}

export function setLanguage(lang) {
  current = lang in STRINGS ? lang : "en";
  localStorage.setItem(STORAGE_KEY, current);
}

export function t(key, vars = {}) {
  const value = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  if (typeof value !== "string") return value;
  return value.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

// Translate every element marked with data-i18n (text), data-i18n-placeholder or data-i18n-aria.
export function translatePage(root = document) {
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-aria]")) el.setAttribute("aria-label", t(el.dataset.i18nAria));
}
