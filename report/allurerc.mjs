// Allure 3 configuration used by ci/report (`allure generate --config report/allurerc.mjs`).
//
// History: `historyPath` has no command-line flag on `allure generate` (3.18.0 has only
// --history-limit and --history-base-url), so ci/report passes the file in ALLURE_HISTORY_PATH
// (absolute). Allure reads the earlier runs from that JSONL file (one line per run) and appends
// the current one; per-test history, "regressed"/"fixed" transitions, flaky marks and the trend
// charts come from it.
//
// Categories: Allure 3 reads a results directory's categories.json (the Allure 2 format the
// plugin writes) only for its allure2/classic plugins; the awesome report takes its categories
// from this file. So the results' categories.json (ALLURE_RESULTS_DIR) is translated here.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));

// An Allure 2 regex is Java's, and must match the whole text (Matcher.matches()). JavaScript
// has no leading inline flags such as `(?s)`: turn them into RegExp flags, and anchor.
const javaRegex = (source) => {
  const m = /^\(\?([a-zA-Z]+)\)/.exec(source);
  const javaFlags = new Set(m ? m[1] : "");
  const other = [...javaFlags].filter((f) => !"ismu".includes(f));
  if (other.length) throw new Error(`inline flag (?${other.join("")}) has no JavaScript equivalent`);
  // Java's u is UNICODE_CASE (JavaScript's u is something else): case folding is already Unicode
  const flags = [...javaFlags].filter((f) => "ism".includes(f)).join("");
  return new RegExp(`^(?:${m ? source.slice(m[0].length) : source})$`, flags);
};

const categoriesFromResults = (dir) => {
  if (!dir) return undefined;
  let raw;
  try {
    raw = JSON.parse(readFileSync(join(dir, "categories.json"), "utf8"));
  } catch (e) {
    if (e.code !== "ENOENT") console.warn(`allurerc: ignoring ${dir}/categories.json: ${e.message}`);
    return undefined;
  }
  if (!Array.isArray(raw)) return undefined;
  const rules = [];
  for (const c of raw) {
    if (!c || typeof c.name !== "string" || !c.name.trim()) continue;
    const matcher = {};
    try {
      if (Array.isArray(c.matchedStatuses) && c.matchedStatuses.length) matcher.statuses = c.matchedStatuses;
      if (typeof c.messageRegex === "string") matcher.message = javaRegex(c.messageRegex);
      if (typeof c.traceRegex === "string") matcher.trace = javaRegex(c.traceRegex);
      if (typeof c.flaky === "boolean") matcher.flaky = c.flaky;
    } catch (e) {
      console.warn(`allurerc: skipping category "${c.name}": ${e.message}`);
      continue;
    }
    rules.push({ name: c.name, matchers: matcher });
  }
  return rules.length ? { rules } : undefined;
};

const categories = categoriesFromResults(process.env.ALLURE_RESULTS_DIR);

export default {
  name: process.env.ALLURE_REPORT_NAME || "pytest-vfio-platform",
  historyPath: process.env.ALLURE_HISTORY_PATH || `${root}allure-history.jsonl`,
  ...(categories ? { categories } : {}),
  plugins: {
    awesome: {
      options: {
        // one self-contained index.html: opens from file:// (a CI artifact, a mail attachment)
        // without a web server; the multi-file layout fetch()es its data and shows only a
        // spinner from file://
        singleFile: true,
        reportLanguage: "en",
      },
    },
  },
};
