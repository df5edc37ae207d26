"""Coded values of the case domain, with their translatable labels.

Codes, not free text, are what reports aggregate on; the labels are what
people read. Order matters: forms list them in this order.
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l

STATES = {
    "AGS": "Aguascalientes", "BC": "Baja California", "BCS": "Baja California Sur",
    "CAMP": "Campeche", "CHIS": "Chiapas", "CHIH": "Chihuahua", "CDMX": "Ciudad de México",
    "COAH": "Coahuila", "COL": "Colima", "DGO": "Durango", "GTO": "Guanajuato",
    "GRO": "Guerrero", "HGO": "Hidalgo", "JAL": "Jalisco", "MEX": "Estado de México",
    "MICH": "Michoacán", "MOR": "Morelos", "NAY": "Nayarit", "NL": "Nuevo León",
    "OAX": "Oaxaca", "PUE": "Puebla", "QRO": "Querétaro", "QROO": "Quintana Roo",
    "SLP": "San Luis Potosí", "SIN": "Sinaloa", "SON": "Sonora", "TAB": "Tabasco",
    "TAMPS": "Tamaulipas", "TLAX": "Tlaxcala", "VER": "Veracruz", "YUC": "Yucatán",
    "ZAC": "Zacatecas",
}

BENEFICIARY_TYPES = {
    "journalist": _l("Journalist"),
    "defender": _l("Human-rights defender"),
    "collective": _l("Collective or organisation"),
}

GENDERS = {
    "woman": _l("Woman"),
    "man": _l("Man"),
    "nonbinary": _l("Non-binary"),
    "undisclosed": _l("Prefer not to say"),
}

JOURNALISM_KINDS = {
    "print": _l("Newspaper or magazine"),
    "radio": _l("Radio"),
    "tv": _l("Television"),
    "digital": _l("Digital outlet"),
    "community": _l("Community media"),
    "freelance": _l("Freelance or independent"),
    "other": _l("Other"),
}

INCIDENT_TYPES = {
    "threat": _l("Threat"),
    "aggression": _l("Physical aggression"),
    "surveillance": _l("Surveillance"),
    "digital_attack": _l("Digital attack"),
    "smear": _l("Smear campaign"),
    "kidnapping": _l("Kidnapping or attempted kidnapping"),
    "raid": _l("Raid"),
    "judicial": _l("Judicial harassment"),
    "other": _l("Other"),
}

AGGRESSOR_TYPES = {
    "criminal_group": _l("Criminal group"),
    "official_municipal": _l("Public servant (municipal)"),
    "official_state": _l("Public servant (state)"),
    "official_federal": _l("Public servant (federal)"),
    "private": _l("Private actor"),
    "unknown": _l("Unknown"),
}

CHANNELS = {
    "in_person": _l("In person"),
    "social_network": _l("Social network"),
    "messaging": _l("Messaging app"),
    "phone": _l("Phone"),
    "other": _l("Other"),
}

PLATFORMS = {
    "facebook": "Facebook", "x": "X (Twitter)", "instagram": "Instagram", "tiktok": "TikTok",
    "youtube": "YouTube", "whatsapp": "WhatsApp", "telegram": "Telegram", "other": _l("Other"),
}

PLATFORM_OUTCOMES = {
    "pending": _l("No answer yet"),
    "removed": _l("Removed"),
    "restricted": _l("Restricted"),
    "no_action": _l("No action taken"),
}

STATUSES = {
    "draft": _l("Draft"),
    "received": _l("Received"),
    "triage": _l("In triage"),
    "urgent_measures": _l("Urgent measures"),
    "risk_assessment": _l("Risk assessment"),
    "board_decision": _l("Awaiting the board's decision"),
    "implementation": _l("Measures being implemented"),
    "active": _l("Protected"),
    "review": _l("Under review"),
    "appeal": _l("Appeal"),
    "not_admitted": _l("Not admitted"),
    "withdrawn": _l("Withdrawn"),
    "closed": _l("Closed"),
}

# What a journalist reads about their own case: plain words, what happens next.
STATUS_EXPLAINED = {
    "draft": _l("Your request is not sent yet. Finish and send it when you are ready."),
    "received": _l("We received your request. A caseworker will review it soon; requests in immediate danger are seen first."),
    "triage": _l("A caseworker is reviewing your request to decide how it will be handled."),
    "urgent_measures": _l("Your case was declared extraordinary: urgent protection measures are being put in place."),
    "risk_assessment": _l("Your request was admitted. The team is assessing the risk you face."),
    "board_decision": _l("The risk assessment is done. The governing board will decide on your protection measures."),
    "implementation": _l("The board decided on your protection measures. The authorities are putting them in place."),
    "active": _l("Your protection measures are in place. They will be reviewed periodically."),
    "review": _l("Your protection measures are being reviewed."),
    "appeal": _l("Your appeal (inconformidad) is being studied."),
    "not_admitted": _l("Your request was not admitted. You may appeal this decision."),
    "withdrawn": _l("This request was withdrawn."),
    "closed": _l("This case is closed."),
}

OPEN_STATUSES = ("received", "triage", "urgent_measures", "risk_assessment", "board_decision",
                 "implementation", "active", "review", "appeal")

NOT_ADMITTED_REASONS = {
    "not_beneficiary": _l("Not a journalist or human-rights defender"),
    "unrelated_to_work": _l("Risk not related to journalistic or defence work"),
    "duplicate": _l("Duplicate of another request"),
    "no_consent": _l("No consent from the person at risk"),
    "insufficient_information": _l("Not enough information after requests for more"),
    "other": _l("Other reason"),
}

RISK_LEVELS = {
    "ordinary": _l("Ordinary"),
    "high": _l("High"),
    "extraordinary": _l("Extraordinary"),
}

DECISION_OUTCOMES = {
    "granted": _l("Granted"),
    "partly_granted": _l("Partly granted"),
    "denied": _l("Denied"),
}

DECISION_REASONS = {
    "risk_confirmed": _l("Risk confirmed by the assessment"),
    "risk_partly_confirmed": _l("Risk partly confirmed"),
    "risk_not_confirmed": _l("Risk not confirmed"),
    "measures_elsewhere": _l("Protected by another programme"),
    "other": _l("Other reason"),
}

AUTHORITIES = {
    "federal": _l("Federal government"),
    "state": _l("State government"),
    "municipal": _l("Municipal government"),
    "private": _l("Private provider"),
}

MEASURE_STATUSES = {
    "decided": _l("Decided"),
    "requested": _l("Requested from the authority"),
    "implemented": _l("Implemented"),
    "active": _l("Active"),
    "withdrawn": _l("Withdrawn"),
}

# Each measure moves forward only: decided → requested → implemented → active → withdrawn.
MEASURE_FLOW = ("decided", "requested", "implemented", "active", "withdrawn")

REVIEW_OUTCOMES = {
    "maintain": _l("Maintain the measures"),
    "modify": _l("Modify the measures"),
    "withdraw": _l("Withdraw the measures and close"),
}

APPEAL_OUTCOMES = {
    "upheld": _l("Appeal upheld: the case is assessed again"),
    "rejected": _l("Appeal rejected"),
}

CLOSURE_REASONS = {
    "risk_ended": _l("The risk ended"),
    "measures_withdrawn": _l("Measures withdrawn after review"),
    "denied": _l("Protection denied"),
    "petitioner_request": _l("At the petitioner's request"),
    "non_cooperation": _l("The petitioner stopped taking part"),
    "death": _l("Death of the beneficiary"),
    "other": _l("Other reason"),
}

PROCEDURES = {
    "extraordinary": _l("Extraordinary"),
    "ordinary": _l("Ordinary"),
    "not_admitted": _l("Not admitted"),
}

MEASURE_CATEGORIES = {
    "urgent": _l("Urgent"),
    "protection": _l("Protection"),
    "preventive": _l("Preventive"),
}

# Every kind of CaseEvent the timeline can hold; an unknown kind shows its code.
EVENT_LABELS = {
    "submitted": _l("Request submitted"),
    "assigned": _l("Assigned"),
    "triaged": _l("Triage decided"),
    "urgent_measures_issued": _l("Urgent measures issued"),
    "urgent_measures_implemented": _l("Urgent measures implemented"),
    "assessment_done": _l("Risk assessment recorded"),
    "decision_made": _l("Board decision recorded"),
    "decision_communicated": _l("Decision sent to the implementing authorities"),
    "measure_requested": _l("Measure requested from the authority"),
    "measure_implemented": _l("Measure implemented"),
    "measure_active": _l("Measure active"),
    "measure_withdrawn": _l("Measure withdrawn"),
    "measures_implemented": _l("Every measure implemented: protection in place"),
    "review_started": _l("Review started"),
    "review_done": _l("Review recorded"),
    "appeal_filed": _l("Appeal filed"),
    "study_received": _l("Independent study received"),
    "appeal_resolved": _l("Appeal resolved"),
    "closed": _l("Case closed"),
    "withdrawn": _l("Request withdrawn"),
    "note_added": _l("Note added"),
    "message_sent": _l("Message sent"),
    "identity_revealed": _l("Sealed identity revealed"),
    "platform_report": _l("Report to the platform recorded"),
    "evidence_added": _l("Evidence added"),
    "incident_added": _l("Incident added"),
}
