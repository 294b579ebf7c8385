// Taking a held SCAIP alarm (docs/scaip.md, "hold_until_taken"): the operator chooses how
// the device calls, and its next resend is answered snu=0 with exactly these. Keyboard
// first like the resolve dialog: digits pick within a list, Tab moves on, Enter takes.
import { el } from "./format.js";
import { t } from "./i18n.js";

const MODES = [0, 1, 2]; // mre: none, duplex, simplex
const CALLBACKS = ["window", 61, 62]; // cre: a window of 1-60 minutes, predefined, call tnu
const TNU = /^\+\d{3,20}$/;
const DEFAULT = { mre: 1, cre: 61, minutes: 10 }; // when nothing is configured

function modeField(checked) {
  const fieldset = el("fieldset");
  fieldset.append(el("legend", t("voice.mre")));
  MODES.forEach((mre, i) => {
    const label = el("label");
    const radio = el("input");
    radio.type = "radio";
    radio.name = "mre";
    radio.value = String(mre);
    radio.checked = mre === checked;
    label.append(radio, ` ${i + 1}. ${t(`scaip.mre.${mre}`)} (mre ${mre})`);
    fieldset.append(label);
  });
  fieldset.addEventListener("keydown", (event) => {
    const index = Number(event.key) - 1;
    if (index >= 0 && index < MODES.length) {
      const radio = fieldset.querySelectorAll("input")[index];
      radio.checked = true;
      radio.focus();
      event.preventDefault();
    }
  });
  return fieldset;
}

function callbackField(cre) {
  const wrap = el("div", "", "field");
  const select = el("select");
  select.id = "voice-cre";
  const label = el("label", t("voice.cre"));
  label.htmlFor = select.id;
  CALLBACKS.forEach((value, i) => {
    const option = el("option", `${i + 1}. ${t(`voice.cre.${value}`)}`);
    option.value = String(value);
    select.append(option);
  });
  select.value = cre >= 1 && cre <= 60 ? "window" : String(cre);
  select.addEventListener("keydown", (event) => {
    const index = Number(event.key);
    if (index >= 1 && index <= CALLBACKS.length) {
      select.selectedIndex = index - 1;
      select.dispatchEvent(new Event("change"));
      event.preventDefault();
    } else if (event.key === "Enter") {
      event.preventDefault();
      select.form.requestSubmit();
    }
  });
  wrap.append(label, select);
  return { wrap, select };
}

function inputField(id, labelKey, type, value) {
  const wrap = el("div", "", "field");
  const input = el("input");
  input.id = id;
  input.type = type;
  input.value = value ?? "";
  const label = el("label", t(labelKey));
  label.htmlFor = id;
  wrap.append(label, input);
  return { wrap, input };
}

/**
 * Ask for the voice parameters, preset to `configured` (the device's, else the
 * municipality's). Resolves with {mre, cre, tnu?}, or null when cancelled (Escape).
 */
export function askVoice(configured, shell) {
  const { dialog, form, buttons, ask } = shell;
  const mre = configured?.mre ?? DEFAULT.mre;
  const cre = configured?.cre ?? DEFAULT.cre;
  const modes = modeField(MODES.includes(mre) ? mre : 2); // mre 3 is simplex too
  const callback = callbackField(cre);
  const minutes = inputField("voice-minutes", "voice.minutes", "number", cre <= 60 ? cre : DEFAULT.minutes);
  minutes.input.min = "1";
  minutes.input.max = "60";
  const tnu = inputField("voice-tnu", "voice.tnu", "tel", configured?.tnu);
  tnu.input.placeholder = "+4712345678";
  const problem = el("p", "", "error-text");
  problem.setAttribute("role", "alert");
  problem.hidden = true;
  const sync = () => { minutes.wrap.hidden = callback.select.value !== "window"; };
  callback.select.addEventListener("change", sync);
  sync();
  form.append(el("p", t("voice.intro"), "hint"), modes, callback.wrap, minutes.wrap, tnu.wrap, problem);
  const { cancel } = buttons(form, "voice.submit");
  const read = () => {
    const choice = callback.select.value;
    const out = {
      mre: Number(form.querySelector("input[name=mre]:checked").value),
      cre: choice === "window" ? Number(minutes.input.value) : Number(choice),
    };
    const number = tnu.input.value.trim();
    if (number) out.tnu = number;
    return out;
  };
  const validate = () => {
    const chosen = read();
    let wrong = null;
    if (!(chosen.cre >= 1 && chosen.cre <= 62 && Number.isInteger(chosen.cre))) wrong = [minutes.input, "voice.badMinutes"];
    else if ((chosen.cre === 62 || chosen.tnu) && !TNU.test(chosen.tnu ?? "")) wrong = [tnu.input, "voice.badTnu"];
    problem.hidden = wrong === null;
    if (wrong) { problem.textContent = t(wrong[1]); wrong[0].focus(); }
    return wrong === null;
  };
  const done = ask(dialog, form, cancel, read, validate);
  modes.querySelector("input:checked").focus();
  return done;
}
