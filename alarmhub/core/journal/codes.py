"""The code systems VKP's document uses, as data: URLs, and the codes alarmhub sends.

Facts from the VKP R4 implementation guide (draft v0.9.0, FHIR 4.0.1; the
HL7Norway/Velferdsteknologi repository, folder VKP-R4) and HL7 Norway's identifier
OIDs. `docs/journal.md` has the tables; a code marked "unconfirmed" there was read from
a draft file whose versions disagree.

The alert codes (`vkp-alert-code-v090`) are all listed: the rules file names one per
alarm kind, and `alarmhub rules check` refuses a code that is not here.
"""

from __future__ import annotations

from types import MappingProxyType

VKP = "http://ehelse.no/fhir"
PROFILE_COMPOSITION = f"{VKP}/StructureDefinition/vkp-Composition-v090"
PROFILE_DETECTED_ISSUE = f"{VKP}/StructureDefinition/vkp-DetectedIssue-v090"
PROFILE_ENCOUNTER = f"{VKP}/StructureDefinition/vkp-Encounter-v090"

ALERT_SYSTEM = f"{VKP}/CodeSystem/vkp-alert-code-v090"
EVENT_SYSTEM = f"{VKP}/CodeSystem/vkp-composition-event-v090"
CATEGORY_SYSTEM = f"{VKP}/CodeSystem/vkp-composition-category-v090"
SECTION_SYSTEM = f"{VKP}/CodeSystem/vkp-composition-section-v090"
MODE_SYSTEM = f"{VKP}/CodeSystem/vkp-encounter-mode-v090"
REASON_SYSTEM = f"{VKP}/CodeSystem/vkp-encounter-reason-v090"

# FHIR's own spelling of LOINC. NHN's JFT example writes https://loinc.org; which one
# JFT insists on is unconfirmed (docs/journal.md): one constant to change if it is https.
LOINC = "http://loinc.org"
NOTE_TYPE = ("34133-9", "Summary of episode note")
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
VIRTUAL = ("VR", "virtual")
CATEGORY = ("1", "Trygghet og mestring")
TITLE = "Journalnotat for respons på hendelse"
RFC3986 = "urn:ietf:rfc:3986"

# Identifier systems (HL7 Norway, no-basis): who the patient, the operator and the
# response centre are.
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"  # fødselsnummer
DNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.2"  # D-nummer
HPR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.4"  # Helsepersonellregisteret's number
ORG_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"  # Enhetsregisteret's organisation number

# alarmhub's own code systems for the cause and action choices of the rules file: the
# codes are the rules file's, so they are alarmhub's, not VKP's.
CAUSE_SYSTEM = "urn:alarmhub:journal:cause"
ACTION_SYSTEM = "urn:alarmhub:journal:action"
# An operator without an HPR number in the user record: alarmhub's user name
# (document.py author_of).
USER_SYSTEM = "urn:alarmhub:user"

# vkp-composition-event-v090: what happened when, each on the Composition with its time.
EVENT_RAISED = ("0", "hendelse meldt")
EVENT_HANDLING = ("1", "hendelse behandles")
EVENT_CLOSED = ("3", "hendelse kvittert")
EVENT_DISPATCHED = ("4", "hendelse til utrykning")
EVENT_RESPONDER = ("5", "hendelse ok utrykning")
EVENT_CAUSE = ("6", "årsak")
EVENT_ACTION = ("7", "tiltak")

# vkp-composition-section-v090: the note's sections.
SECTION_ALARM = ("1", "alarm_information")
SECTION_REASON = ("2", "reason")
SECTION_RESPONSE = ("3", "response_summary")
SECTION_SIGNATURE = ("7", "signature")

ENCOUNTER_MODES = MappingProxyType(
    {
        "0": "bildetilsyn_anonymisert",
        "1": "bildetilsyn",
        "2": "toveis_tale",
        "3": "innlytt_anonymisert",
        "4": "innlytt",
    }
)
ENCOUNTER_REASONS = MappingProxyType({"1": "planlagt tilsyn", "2": "hendelsesbasert tilsyn"})

ALERT_CODES = MappingProxyType(
    {
        "1": "Medisindispenserhendelse",
        "1.3": "medisin mangler bekreftelse",
        "1.4": "medisin teknisk feil",
        "1.5": "medisin feil rull",
        "1.6": "medisin mangler",
        "1.7": "medisin mangler ikke utlevert",
        "1.8": "medisin mangler tidsplan",
        "1.9": "medisin ikke tilkoblet",
        "1.10": "medisin ingen kontakt",
        "1.11": "medisin dispenser aapen",
        "1.12": "medisin innbrudd",
        "1.13": "medisin utelatt full",
        "1.14": "medisin rull stoppet",
        "1.15": "medisin mangler reise",
        "1.16": "medisin ikke lest",
        "1.17": "medisin batteri tomt",
        "1.21": "medisin rull behandlet",
        "1.22": "medisin plan endret",
        "1.23": "medisin melding ikke lest",
        "1.24": "medisin venter",
        "1.25": "medisin behov pafyll",
        "1.26": "medisin dosett plassering",
        "1.27": "medisin batteri lavt",
        "2": "Lokaliseringshendelse",
        "3": "Trygghetsalarm",
        "4": "pasientvarsling",
        "4.1": "fall",
        "4.2": "forlatt sengen",
        "4.3": "satt seg opp seng",
        "4.4": "reist seg fra stol",
        "4.5": "kommet inn rom",
        "4.6": "forlatt rom",
        "4.7": "uventet langt opphold",
        "4.8": "aktivitet rom",
        "4.9": "inaktivitet",
        "4.10": "høyt lydnivå",
        "4.11": "brannalarm",
        "4.12": "fravær",
        "4.13": "knappetrykk",
        "4.14": "snortrekk",
        "4.15": "dør åpnet",
        "4.16": "dør lukket",
        "4.17": "vannalarm",
        "4.18": "bevegelse",
        "4.19": "manglende bevegelse",
        "4.20": "lagt seg seng",
        "4.21": "forlatt bolig",
        "4.22": "mislykket brukeranrop",
        "4.23": "inaktivitet bad",
        "5": "Digital hjemmeoppfølging",
        "5.1": "Oppsummerende varsel",
        "5.2": "Handling utført",
        "5.2.1": "Måledata rapportert",
        "5.2.2": "Skjemabesvarelse",
        "5.2.3": "Annen handling utført",
        "5.3": "Inaktiv pasient",
        "5.3.1": "Manglende skjemabesvarelse",
        "5.3.2": "Måling ikke rapportert",
        "6": "Elektronisk dørlås",
        "7": "Sykesignalanlegg",
        "7.1": "Inkontinens",
        "7.2": "Epilepsi",
    }
)
