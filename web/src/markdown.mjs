// The chat page's Markdown: CommonMark + GFM tables and strikethrough (markdown-it), code highlighted (highlight.js
// core with the languages models write most), and the HTML made inert (DOMPurify with an allow-list). Bundled by
// esbuild into chatsse/static/markdown.js; the page imports it, and the tests run the same bundle in Node (jsdom).
//
//   import { createRenderer } from "/static/markdown.js";
//   const render = createRenderer(window);   // any window with a DOM: the page's, or jsdom's
//   element.innerHTML = render(markdownText);
import MarkdownIt from "markdown-it";
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import go from "highlight.js/lib/languages/go";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";

const LANGUAGES = { bash, cpp, css, go, java, javascript, json, python, rust, sql, typescript, xml, yaml };
for (const [name, language] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, language);

// Everything Markdown can produce here, and nothing else: no img (the page's policy would block it, and a reply must
// not load anything), no style, no event handlers, no forms. Links only to http(s) and mailto.
export const ALLOWED_TAGS = [
  "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li", "ol", "p", "pre",
  "s", "span", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
];
export const ALLOWED_ATTR = ["class", "href", "rel", "start", "target", "title"];
const SAFE_URL = /^(?:https?:|mailto:)/i;

/** A function from Markdown to sanitized HTML, for the DOM of `window`. */
export function createRenderer(window) {
  const purify = DOMPurify(window);
  purify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      if (!SAFE_URL.test(node.getAttribute("href") || "")) node.removeAttribute("href");
      node.setAttribute("rel", "noopener noreferrer");
      node.setAttribute("target", "_blank");
    }
  });
  const md = new MarkdownIt({
    html: false, // raw HTML from the model is shown as text
    linkify: true,
    highlight(code, language) {
      if (language && hljs.getLanguage(language)) {
        return hljs.highlight(code, { language, ignoreIllegals: true }).value;
      }
      return ""; // markdown-it escapes it
    },
  }).enable(["table", "strikethrough"]);
  md.validateLink = (url) => SAFE_URL.test(url.trim()); // javascript:, data:, vbscript:, relative: stay text
  return (text) =>
    purify.sanitize(md.render(text), {
      ALLOWED_TAGS,
      ALLOWED_ATTR,
      ALLOWED_URI_REGEXP: SAFE_URL,
      ALLOW_DATA_ATTR: false,
    });
}
