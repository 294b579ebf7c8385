// Formatting shared by the pages: Europe/Oslo wall-clock times, waiting times, priorities.
import { kindText, lang, t } from "./i18n.js";

export const TIME_ZONE = "Europe/Oslo";

// Known municipalities by number; others show their number alone.
const MUNICIPALITIES = {
  "0301": "Oslo", "4601": "Bergen", "5001": "Trondheim", "1804": "Bodø", "3201": "Bærum",
  "1103": "Stavanger", "5501": "Tromsø", "4204": "Kristiansand", "3301": "Drammen",
};

/** Municipalities an admin (who sees all) can choose from: the known ones plus any seen. */
export function knownMunicipalities(seen = []) {
  return [...new Set([...Object.keys(MUNICIPALITIES), ...seen])].sort();
}

export function municipalityText(number) {
  const name = MUNICIPALITIES[number];
  return name ? `${number} ${name}` : String(number ?? "");
}

function locale() {
  return lang() === "nb" ? "nb-NO" : "en-GB";
}

// Made once per language: a formatter costs far more to make than to use, and the
// queue formats a time for every row it builds.
const formatters = new Map();
function formatter(kind, options) {
  const key = `${kind}/${locale()}`;
  let made = formatters.get(key);
  if (!made) {
    made = new Intl.DateTimeFormat(locale(), { timeZone: TIME_ZONE, hourCycle: "h23", ...options });
    formatters.set(key, made);
  }
  return made;
}

/** "25.11.2026, 11:00:05" in Oslo time (both languages use 24-hour clocks). */
export function dateTime(iso) {
  if (!iso) return "";
  return formatter("dateTime", { dateStyle: "short", timeStyle: "medium" }).format(new Date(iso));
}

export function timeOnly(iso) {
  if (!iso) return "";
  return formatter("time", { hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(new Date(iso));
}

/**
 * "Door closed 02:00:20 — waiting for an operator": a device event that would have
 * cleared a person alarm, which stays open for a person to close (issue 12 item 3).
 */
export function clearingText(alarm) {
  if (!alarm.clearing_event) return "";
  const key = `clearing.${alarm.clearing_event}`;
  const known = t(key);
  const event = known === key ? t("clearing.other") : known;
  return t("alarm.clearing", { event, time: timeOnly(alarm.clearing_at) });
}

/** "Escalation exhausted 02:13:00 — nobody left to notify" (issue 12 item 5). */
export function exhaustedText(alarm) {
  return alarm.escalation_exhausted_at ? t("alarm.exhausted", { time: timeOnly(alarm.escalation_exhausted_at) }) : "";
}

/** The calendar day in Oslo ("2026-11-25") of an instant: reports group by the local day. */
export function osloDay(iso) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: TIME_ZONE }).format(new Date(iso));
}

/** A waiting time as m:ss under an hour, h:mm:ss beyond: digits that tick visibly each second. */
export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** A target in words: 60 -> "60 s", 300 -> "5 min", 3600 -> "60 min". */
export function shortDuration(seconds) {
  if (seconds == null || Number.isNaN(seconds)) return "–";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  return `${Math.round(seconds / 60)} min`;
}

export function priorityText(priority) {
  return t(`prio.${priority}`);
}

/** A priority badge: colour and text together, never colour alone. */
export function priorityBadge(priority) {
  const span = document.createElement("span");
  span.className = `prio prio-${priority}`;
  span.textContent = priorityText(priority);
  return span;
}

export { kindText };

/** Create an element with text: the pages build DOM nodes, never HTML strings (no injection). */
export function el(tag, text = "", className = "") {
  const node = document.createElement(tag);
  if (text !== "") node.textContent = text;
  if (className) node.className = className;
  return node;
}
