// Image input: file picker, drag and drop, paste. Checks type, bytes and pixels before use.

import { t } from "./i18n.js";

const TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp"];
const EXTENSIONS = /\.(jpe?g|png|webp|gif|bmp)$/i;

export function formatBytes(n) {
  return n >= 1024 * 1024 ? `${(n / (1024 * 1024)).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} KB`;
}

export class ImageRejected extends Error {}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function decode(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("decode failed"));
    img.src = url;
  });
}

// -> {dataUrl, width, height, size, name}; throws ImageRejected with a message for the user.
export async function loadImageFile(file, limits) {
  const name = file.name || "clipboard";
  const typed = TYPES.includes(file.type) || (!file.type && EXTENSIONS.test(name));
  if (!typed) throw new ImageRejected(t("notImage", { name }));
  const mb = Math.round(limits.max_image_bytes / (1024 * 1024));
  if (file.size > limits.max_image_bytes) throw new ImageRejected(t("tooBig", { size: formatBytes(file.size), mb }));
  const dataUrl = await readAsDataURL(file);
  let img;
  try {
    img = await decode(dataUrl);
  } catch {
    throw new ImageRejected(t("unreadable", { name }));
  }
  const width = img.naturalWidth;
  const height = img.naturalHeight;
  if (width * height > limits.max_image_pixels) {
    throw new ImageRejected(t("tooManyPixels", { w: width, h: height, mp: Math.round(limits.max_image_pixels / 1e6) }));
  }
  return { dataUrl, width, height, size: file.size, name };
}

// Calls onFile(file) for a chosen, dropped or pasted file.
export function wireImageInputs({ input, dropZone, onFile }) {
  input.addEventListener("change", () => {
    if (input.files?.length) onFile(input.files[0]);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      dropZone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"));
  }
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer?.files?.[0];
    if (file) onFile(file);
  });
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.items || [])].find((i) => i.kind === "file");
    if (!item) return;
    event.preventDefault();
    onFile(item.getAsFile());
  });
}
