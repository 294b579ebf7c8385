// A short alert tone generated with WebAudio: no audio file to download or cache.
// Browsers only start audio after a user gesture, so the page shows a "sound is off"
// button until the first click or key press has unlocked it.

let context = null;

export function soundReady() {
  return context !== null && context.state === "running";
}

/** Create/resume the audio context; must run inside a user gesture handler. */
export async function unlockSound() {
  if (!context) context = new AudioContext();
  if (context.state !== "running") {
    try { await context.resume(); } catch { /* still locked: the button stays visible */ }
  }
  return soundReady();
}

/** Three rising beeps (~0.6 s): distinct from system sounds, short enough not to mask speech. */
export function playAlert() {
  if (!soundReady()) return false;
  const start = context.currentTime + 0.02;
  [880, 1175, 1568].forEach((frequency, i) => beep(frequency, start + i * 0.2, 0.15));
  return true;
}

function beep(frequency, at, length) {
  const osc = context.createOscillator();
  const gain = context.createGain();
  osc.type = "square";
  osc.frequency.value = frequency;
  // A quick attack and release avoid clicks at the start and end of each tone.
  gain.gain.setValueAtTime(0, at);
  gain.gain.linearRampToValueAtTime(0.25, at + 0.01);
  gain.gain.setValueAtTime(0.25, at + length - 0.02);
  gain.gain.linearRampToValueAtTime(0, at + length);
  osc.connect(gain).connect(context.destination);
  osc.start(at);
  osc.stop(at + length);
}
