// Texts in Norwegian bokmål (default) and English. The language is a per-browser choice
// kept in localStorage, so a shared response-centre workstation keeps its setting.

const STORE_KEY = "alarmhub.lang";
export const LANGS = ["nb", "en"];

const TEXT = {
  nb: {
    "nav.queue": "Alarmkø", "nav.devices": "Enheter", "nav.reports": "Responstider",
    "nav.logout": "Logg ut", "nav.skip": "Hopp til innhold", "nav.main": "Hovedmeny", "lang.toggle": "English", "lang.toggleLabel": "Switch to English",
    "login.title": "Logg inn", "login.username": "Brukernavn", "login.password": "Passord",
    "login.submit": "Logg inn", "login.failed": "Feil brukernavn eller passord.",
    "queue.title": "Alarmkø", "queue.caption": "Åpne og kvitterte alarmer, mest haster først",
    "queue.empty": "Ingen åpne alarmer.", "queue.counts": "{open} åpne, {ack} kvitterte",
    "conn.live": "Direkte", "conn.connecting": "Kobler til …",
    "conn.stale": "Frakoblet – køen kan være utdatert, prøver igjen …",
    "sound.off": "Lyd er av – trykk her (eller en tast) for å slå på varsellyd",
    "sound.on": "Varsellyd på",
    "col.priority": "Prioritet", "col.kind": "Alarm", "col.municipality": "Kommune",
    "col.device": "Enhet", "col.age": "Ventetid", "col.raised": "Utløst",
    "col.escalation": "Eskalering", "col.repeats": "Gjentak", "col.state": "Status",
    "overdue": "Over frist", "overdueLong": "Over svarfrist ({target})",
    "prio.1": "P1 Kritisk", "prio.2": "P2 Høy", "prio.3": "P3 Normal", "prio.4": "P4 Teknisk",
    "state.open": "Åpen", "state.acknowledged": "Kvittert", "state.resolved": "Avsluttet",
    "announce.new": "Ny alarm: {prio}, {kind}, {municipality}, {device}",
    "action.acknowledge": "Kvitter", "action.note": "Notat", "action.resolve": "Avslutt",
    "action.escalate": "Eskaler", "action.dispatch": "Hjelp sendt", "action.on-site": "Hjelp fremme",
    "action.open": "Åpne detaljer", "action.back": "Tilbake til køen",
    "action.done": "{action}: {kind} ({device})",
    "conflict": "Allerede håndtert av {holder}: {message}",
    "error.generic": "Feil: {message}", "error.forbidden": "Du har ikke tilgang til dette.",
    "error.notfound": "Fant ikke alarmen.",
    "dialog.cancel": "Avbryt", "dialog.save": "Lagre",
    "note.title": "Legg til notat", "note.text": "Notat",
    "resolve.title": "Avslutt alarm", "resolve.outcome": "Utfall", "resolve.note": "Notat (valgfritt)",
    "resolve.submit": "Avslutt alarm",
    "outcome.helped": "Hjulpet", "outcome.false_alarm": "Falsk alarm",
    "outcome.no_response_dispatched": "Ikke svar – hjelp sendt", "outcome.technical": "Teknisk feil",
    "help.title": "Hurtigtaster", "help.close": "Lukk",
    "help.move": "Flytt markering ned/opp", "help.open": "Åpne detaljer",
    "help.help": "Vis hurtigtaster", "help.back": "Tilbake til køen (detaljside)",
    "help.selectHint": "Velg en alarm i køen først.",
    "detail.title": "Alarm", "detail.actions": "Handlinger", "detail.summary": "Sammendrag", "detail.timeline": "Tidslinje",
    "detail.device": "Enhet", "detail.events": "Siste hendelser fra enheten",
    "detail.position": "Posisjon", "detail.noPosition": "Ingen posisjon mottatt.",
    "detail.map": "Åpne i kart (OpenStreetMap)", "detail.accuracy": "Nøyaktighet",
    "detail.coordinates": "Koordinater", "detail.ackBy": "Kvittert av",
    "detail.dispatched": "Hjelp sendt", "detail.onSite": "Hjelp fremme",
    "detail.resolvedBy": "Avsluttet av", "detail.outcome": "Utfall",
    "detail.suppressedBy": "Undertrykt av", "detail.noEvents": "Ingen hendelser.",
    "field.id": "ID", "field.label": "Navn/merknad", "field.kind": "Type", "field.municipality": "Kommune",
    "field.heartbeat": "Livstegn-intervall (sekunder)", "field.profile": "Profil",
    "field.active": "Status", "field.type": "Hendelse", "field.time": "Tid", "field.actor": "Hvem",
    "field.detail": "Detaljer",
    "timeline.raised": "Utløst", "timeline.repeated": "Gjentatt", "timeline.reopened": "Gjenåpnet",
    "timeline.escalated": "Eskalert", "timeline.acknowledged": "Kvittert",
    "timeline.responder_dispatched": "Hjelp sendt", "timeline.responder_on_site": "Hjelp fremme",
    "timeline.resolved": "Avsluttet", "timeline.auto_resolved": "Avsluttet automatisk",
    "timeline.suppressed": "Undertrykt", "timeline.note": "Notat", "timeline.event": "Hendelse",
    "devices.title": "Enheter", "devices.search": "Søk (ID eller navn)", "devices.filterKind": "Type",
    "devices.filterMunicipality": "Kommune", "devices.filterActive": "Vis",
    "devices.all": "Alle", "devices.activeOnly": "Bare aktive", "devices.inactiveOnly": "Bare utfasede",
    "devices.active": "Aktiv", "devices.inactive": "Utfaset",
    "devices.register": "Registrer enhet", "devices.edit": "Endre", "devices.decommission": "Fase ut",
    "devices.confirmDecommission": "Fase ut enheten {id}? Den vil ikke lenger utløse alarmer.",
    "devices.import": "Importer fra CSV", "devices.importHelp": "Første linje: id,kind,municipality[,label,heartbeat_interval_s]",
    "devices.importFile": "CSV-fil", "devices.importText": "eller lim inn CSV",
    "devices.importSubmit": "Importer", "devices.importOk": "{count} enheter importert.",
    "devices.importErrors": "Rader med feil", "devices.row": "Rad", "devices.error": "Feil",
    "devices.saved": "Lagret: {id}", "devices.count": "{shown} av {total} enheter",
    "devices.empty": "Ingen enheter passer filteret.", "devices.actions": "Handlinger",
    "devices.settingsNote": "Nattvindu, trygg sone, doseplan og beboerreferanse settes under «Endre» for hver enhet. Skriv aldri navn i beboerreferansen.",
    "field.resident": "Beboerreferanse (ikke navn)",
    "field.nightFrom": "Natt fra",
    "field.nightTo": "Natt til",
    "field.zoneLat": "Trygg sone: breddegrad",
    "field.zoneLon": "Trygg sone: lengdegrad",
    "field.zoneRadius": "Trygg sone: radius (m)",
    "field.doseTimes": "Dosetider (kommaseparert)",
    "kind.safety_alarm": "Trygghetsalarm", "kind.door_sensor": "Dørsensor", "kind.fall_sensor": "Fallsensor",
    "kind.gps_tracker": "GPS-sporer", "kind.medication_dispenser": "Medisindispenser",
    "reports.title": "Responstider", "reports.from": "Fra", "reports.to": "Til", "reports.show": "Vis",
    "reports.table": "Tid til kvittering per prioritet og alarmtype",
    "reports.count": "Antall", "reports.median": "Median", "reports.p90": "P90", "reports.p99": "P99",
    "reports.sla": "Innenfor frist", "reports.target": "Frist",
    "reports.chart": "Daglig tid til kvittering", "reports.chartPriority": "Prioritet i diagrammet",
    "reports.legendMedian": "Median", "reports.legendP90": "90-persentil", "reports.legendSla": "Frist",
    "reports.noData": "Ingen data i perioden.", "reports.chartDesc": "Daglig median og 90-persentil tid til kvittering for {prio}, sammenlignet med fristen på {target}.",
    "reports.seconds": "sekunder", "reports.clientSide": "Dagsserien er regnet ut i nettleseren fra avsluttede alarmer.",
    "all": "Alle",
  },
  en: {
    "nav.queue": "Alarm queue", "nav.devices": "Devices", "nav.reports": "Response times",
    "nav.logout": "Log out", "nav.skip": "Skip to content", "nav.main": "Main menu", "lang.toggle": "Norsk", "lang.toggleLabel": "Bytt til norsk",
    "login.title": "Log in", "login.username": "Username", "login.password": "Password",
    "login.submit": "Log in", "login.failed": "Wrong username or password.",
    "queue.title": "Alarm queue", "queue.caption": "Open and acknowledged alarms, most urgent first",
    "queue.empty": "No open alarms.", "queue.counts": "{open} open, {ack} acknowledged",
    "conn.live": "Live", "conn.connecting": "Connecting …",
    "conn.stale": "Disconnected – the queue may be out of date, retrying …",
    "sound.off": "Sound is off – click here (or press any key) to enable alert sounds",
    "sound.on": "Alert sound on",
    "col.priority": "Priority", "col.kind": "Alarm", "col.municipality": "Municipality",
    "col.device": "Device", "col.age": "Waiting", "col.raised": "Raised",
    "col.escalation": "Escalation", "col.repeats": "Repeats", "col.state": "State",
    "overdue": "Past target", "overdueLong": "Past response target ({target})",
    "prio.1": "P1 Critical", "prio.2": "P2 High", "prio.3": "P3 Normal", "prio.4": "P4 Technical",
    "state.open": "Open", "state.acknowledged": "Acknowledged", "state.resolved": "Resolved",
    "announce.new": "New alarm: {prio}, {kind}, {municipality}, {device}",
    "action.acknowledge": "Acknowledge", "action.note": "Note", "action.resolve": "Resolve",
    "action.escalate": "Escalate", "action.dispatch": "Dispatched", "action.on-site": "On site",
    "action.open": "Open details", "action.back": "Back to the queue",
    "action.done": "{action}: {kind} ({device})",
    "conflict": "Already handled by {holder}: {message}",
    "error.generic": "Error: {message}", "error.forbidden": "You do not have access to this.",
    "error.notfound": "Alarm not found.",
    "dialog.cancel": "Cancel", "dialog.save": "Save",
    "note.title": "Add a note", "note.text": "Note",
    "resolve.title": "Resolve alarm", "resolve.outcome": "Outcome", "resolve.note": "Note (optional)",
    "resolve.submit": "Resolve alarm",
    "outcome.helped": "Helped", "outcome.false_alarm": "False alarm",
    "outcome.no_response_dispatched": "No response – help dispatched", "outcome.technical": "Technical fault",
    "help.title": "Keyboard shortcuts", "help.close": "Close",
    "help.move": "Move the selection down/up", "help.open": "Open details",
    "help.help": "Show shortcuts", "help.back": "Back to the queue (detail page)",
    "help.selectHint": "Select an alarm in the queue first.",
    "detail.title": "Alarm", "detail.actions": "Actions", "detail.summary": "Summary", "detail.timeline": "Timeline",
    "detail.device": "Device", "detail.events": "Recent events from the device",
    "detail.position": "Position", "detail.noPosition": "No position received.",
    "detail.map": "Open in a map (OpenStreetMap)", "detail.accuracy": "Accuracy",
    "detail.coordinates": "Coordinates", "detail.ackBy": "Acknowledged by",
    "detail.dispatched": "Dispatched", "detail.onSite": "On site",
    "detail.resolvedBy": "Resolved by", "detail.outcome": "Outcome",
    "detail.suppressedBy": "Suppressed by", "detail.noEvents": "No events.",
    "field.id": "ID", "field.label": "Label", "field.kind": "Kind", "field.municipality": "Municipality",
    "field.heartbeat": "Heartbeat interval (seconds)", "field.profile": "Profile",
    "field.active": "Status", "field.type": "Event", "field.time": "Time", "field.actor": "Who",
    "field.detail": "Details",
    "timeline.raised": "Raised", "timeline.repeated": "Repeated", "timeline.reopened": "Reopened",
    "timeline.escalated": "Escalated", "timeline.acknowledged": "Acknowledged",
    "timeline.responder_dispatched": "Responder dispatched", "timeline.responder_on_site": "Responder on site",
    "timeline.resolved": "Resolved", "timeline.auto_resolved": "Resolved automatically",
    "timeline.suppressed": "Suppressed", "timeline.note": "Note", "timeline.event": "Event",
    "devices.title": "Devices", "devices.search": "Search (ID or label)", "devices.filterKind": "Kind",
    "devices.filterMunicipality": "Municipality", "devices.filterActive": "Show",
    "devices.all": "All", "devices.activeOnly": "Active only", "devices.inactiveOnly": "Decommissioned only",
    "devices.active": "Active", "devices.inactive": "Decommissioned",
    "devices.register": "Register device", "devices.edit": "Edit", "devices.decommission": "Decommission",
    "devices.confirmDecommission": "Decommission device {id}? It will no longer raise alarms.",
    "devices.import": "Import from CSV", "devices.importHelp": "First line: id,kind,municipality[,label,heartbeat_interval_s]",
    "devices.importFile": "CSV file", "devices.importText": "or paste CSV",
    "devices.importSubmit": "Import", "devices.importOk": "{count} devices imported.",
    "devices.importErrors": "Rows with errors", "devices.row": "Row", "devices.error": "Error",
    "devices.saved": "Saved: {id}", "devices.count": "{shown} of {total} devices",
    "devices.empty": "No devices match the filter.", "devices.actions": "Actions",
    "devices.settingsNote": "Night window, safe zone, dose schedule and resident reference are set under \u201cEdit\u201d for each device. Never put a name in the resident reference.",
    "field.resident": "Resident reference (not a name)",
    "field.nightFrom": "Night from",
    "field.nightTo": "Night until",
    "field.zoneLat": "Safe zone: latitude",
    "field.zoneLon": "Safe zone: longitude",
    "field.zoneRadius": "Safe zone: radius (m)",
    "field.doseTimes": "Dose times (comma-separated)",
    "kind.safety_alarm": "Safety alarm", "kind.door_sensor": "Door sensor", "kind.fall_sensor": "Fall sensor",
    "kind.gps_tracker": "GPS tracker", "kind.medication_dispenser": "Medication dispenser",
    "reports.title": "Response times", "reports.from": "From", "reports.to": "To", "reports.show": "Show",
    "reports.table": "Time to acknowledge per priority and alarm kind",
    "reports.count": "Count", "reports.median": "Median", "reports.p90": "P90", "reports.p99": "P99",
    "reports.sla": "Within target", "reports.target": "Target",
    "reports.chart": "Daily time to acknowledge", "reports.chartPriority": "Priority in the chart",
    "reports.legendMedian": "Median", "reports.legendP90": "90th percentile", "reports.legendSla": "Target",
    "reports.noData": "No data in this period.", "reports.chartDesc": "Daily median and 90th percentile time to acknowledge for {prio}, against the target of {target}.",
    "reports.seconds": "seconds", "reports.clientSide": "The daily series is computed in the browser from resolved alarms.",
    "all": "All",
  },
};

// Alarm kinds (from the rules file and supervision) in plain words.
const KINDS = {
  nb: {
    button: "Trygghetsalarm trykket", fall: "Fall", door_open_night: "Dør åpnet om natten",
    dose_missed: "Dose ikke tatt", dispenser_fault: "Feil på medisindispenser",
    battery_low: "Lavt batteri", tamper: "Sabotasje", power_lost: "Strømbrudd",
    device_silent: "Enhet taus (ingen livstegn)", device_offline: "Enhet taus (ingen livstegn)", left_safe_zone: "Utenfor trygg sone",
    geofence: "Utenfor trygg sone",
  },
  en: {
    button: "Safety alarm pressed", fall: "Fall", door_open_night: "Door opened at night",
    dose_missed: "Dose missed", dispenser_fault: "Dispenser fault",
    battery_low: "Battery low", tamper: "Tamper", power_lost: "Power lost",
    device_silent: "Device silent (no heartbeat)", device_offline: "Device silent (no heartbeat)", left_safe_zone: "Left safe zone",
    geofence: "Left safe zone",
  },
};

export function lang() {
  const stored = localStorage.getItem(STORE_KEY);
  return LANGS.includes(stored) ? stored : "nb";
}

export function setLang(value) {
  localStorage.setItem(STORE_KEY, value);
}

/** Translate `key`, filling `{name}` placeholders from `vars`. Unknown keys show as-is. */
export function t(key, vars = {}) {
  const text = TEXT[lang()][key] ?? TEXT.nb[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

/** An alarm kind in plain words; an unknown kind is shown with spaces, never hidden. */
export function kindText(kind) {
  return KINDS[lang()][kind] ?? String(kind).replaceAll("_", " ");
}

/** Fill every element carrying data-i18n (text), data-i18n-label (aria-label) or data-i18n-placeholder. */
export function translatePage(root = document) {
  document.documentElement.lang = lang();
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
}
