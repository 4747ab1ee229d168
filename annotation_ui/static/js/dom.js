// DOM helpers. Everything a user supplied goes into the page with textContent, never as HTML.
export const $ = (sel) => document.querySelector(sel);

export const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

// One status line for what just happened (tests read data-message).
export function say(text, isError = false) {
  const line = $("#progress-line");
  line.dataset.message = text;
  line.textContent = text;
  line.className = isError ? "error" : "";
}
