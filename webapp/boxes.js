// GLM grounding: <|begin_of_box|>[x1,y1,x2,y2]<|end_of_box|> with coordinates normalised to 0-1000.

const NUM = String.raw`\s*(\d+(?:\.\d+)?)\s*`;
const COORDS = String.raw`\[\[?${NUM},${NUM},${NUM},${NUM}\]?\]`;
// The marked form, or four bare coordinates in brackets (when the markers are stripped).
const BOX_RE = new RegExp(String.raw`<\|begin_of_box\|>\s*${COORDS}\s*<\|end_of_box\|>|${COORDS}`, "g");
const PARTIAL_RE = /<\|begin_of_box\|>[^<]*$/;

export const BOX_COLOURS = ["#e4572e", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];

function toBox(numbers) {
  const [x1, y1, x2, y2] = numbers.map(Number);
  const valid = [x1, y1, x2, y2].every((v) => v >= 0 && v <= 1000) && x2 > x1 && y2 > y1;
  return valid ? { x1, y1, x2, y2 } : null;
}

// Text -> [{kind: "text", text} | {kind: "box", box, index}]. A box still streaming in is shown as "…".
export function parseAnswer(text) {
  const segments = [];
  let last = 0;
  let index = 0;
  for (const match of text.matchAll(BOX_RE)) {
    const numbers = match[1] !== undefined ? match.slice(1, 5) : match.slice(5, 9);
    const box = toBox(numbers);
    if (!box) continue;
    if (match.index > last) segments.push({ kind: "text", text: text.slice(last, match.index) });
    segments.push({ kind: "box", box, index: index++ });
    last = match.index + match[0].length;
  }
  let rest = text.slice(last);
  const partial = rest.match(PARTIAL_RE);
  if (partial) rest = `${rest.slice(0, partial.index)}…`;
  if (rest) segments.push({ kind: "text", text: rest });
  return segments;
}

export function boxesIn(text) {
  return parseAnswer(text).filter((s) => s.kind === "box");
}

// Percentages of the frame, which wraps the displayed image exactly: right for any size or aspect.
export function boxStyle(box) {
  return {
    left: `${box.x1 / 10}%`,
    top: `${box.y1 / 10}%`,
    width: `${(box.x2 - box.x1) / 10}%`,
    height: `${(box.y2 - box.y1) / 10}%`,
  };
}

export function colourFor(index) {
  return BOX_COLOURS[index % BOX_COLOURS.length];
}

export function drawBoxes(layer, boxes, labelFor) {
  layer.replaceChildren();
  for (const { box, index } of boxes) {
    const rect = document.createElement("div");
    rect.className = "box";
    // Keep the label on the image: right-aligned near the right edge, inside the box near the top.
    rect.classList.toggle("label-end", box.x1 > 650);
    rect.classList.toggle("label-inside", box.y1 < 60);
    rect.dataset.box = `${box.x1},${box.y1},${box.x2},${box.y2}`;
    Object.assign(rect.style, boxStyle(box), { borderColor: colourFor(index) });
    const label = document.createElement("span");
    label.className = "box-label";
    label.style.background = colourFor(index);
    label.textContent = labelFor(index);
    rect.append(label);
    layer.append(rect);
  }
}
