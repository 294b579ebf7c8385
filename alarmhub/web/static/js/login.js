// The login page: a plain HTML form (it works without JS); this only translates it,
// shows a failed attempt (?error=…) and carries the page the user wanted (?next=…).
import { lang, setLang, translatePage } from "./i18n.js";

translatePage();
const params = new URLSearchParams(location.search);
document.getElementById("login-error").hidden = !params.has("error");
const next = params.get("next");
// Only same-site paths: an open redirect would let a phishing link borrow our login page.
if (next && next.startsWith("/") && !next.startsWith("//")) document.getElementById("next").value = next;
document.getElementById("lang-toggle").addEventListener("click", () => {
  setLang(lang() === "nb" ? "en" : "nb");
  translatePage();
});
