"""Synthetic cases at scale, for demos and benchmarks (`flask protect demo --cases N`).

Each case is simulated forward in time from its submission, with delays drawn
from skewed distributions (good weeks and bad months, slower caseworkers,
slower implementing authorities, slower early years), and stops wherever
"now" finds it: recent cases sit in the early stages, old ones are active or
closed, and some are stuck. The events it writes are the ones
``cases.service`` writes for the same steps (same kinds, same data keys), in
an order the state machine accepts, so reports and clocks computed from the
timeline see a believable mechanism, late more often than not.

Speed (100,000 cases, ~1.1 million events, in about a minute): rows are plain
dicts, written in bulk with no ORM objects and no per-row queries (COPY on
PostgreSQL, executemany on SQLite), one transaction per batch, by a writer
process of their own while the next batch is made (two cores, no shared lock).
Personal data is sealed with the keyring directly, bound to its row id as the
``sealed`` descriptor does. Evidence files are not generated (they would need
blobs), nor deadline clocks (the deadlines module derives those from events).

The values are synthetic: names from short lists, narratives from templates.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import random
import subprocess
import sys
import time
from bisect import bisect
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy import JSON, Date, Integer, Table, func, insert, select

from ..accounts import service as accounts
from ..accounts.models import User, normalise_email
from ..audit import service as audit
from ..crypto.columns import aad_for, keyring, new_row_id
from ..extensions import Session, UTCDateTime, utcnow
from ..localtime import MEXICO
from ..security import passwords
from . import editions, service
from .codes import MEASURE_FLOW
from .models import (
    Appeal,
    BoardDecision,
    Case,
    CaseEvent,
    Incident,
    Measure,
    Message,
    Note,
    OnlineThreat,
    Review,
    RiskAssessment,
)
from .service import REF_ALPHABET

HOUR = 3600.0
DAY = 86400.0
YEARS = 3

# The pool of demo accounts the generated cases belong to. One password for
# all (hashed once); staff get their own TOTP secret (printed by the CLI).
POOL_PASSWORD = "Demo pool 2026 protect"
CASEWORKERS = [f"caseworker{i:02d}@demo.protect.local" for i in range(1, 21)]
SUPERVISORS = [f"supervisor{i:02d}@demo.protect.local" for i in range(1, 4)]
JOURNALISTS = [f"periodista{i:03d}@demo.protect.local" for i in range(1, 201)]


# -- pools of demo accounts ------------------------------------------------

class Pools:
    def __init__(self, caseworkers: list[str], supervisors: list[str], journalists: list[str]):
        self.caseworkers = caseworkers
        self.supervisors = supervisors
        self.journalists = journalists


def _existing(session: Session, emails: list[str]) -> dict[str, str]:
    """email -> user id of the accounts among ``emails`` that exist (one query)."""
    ring = keyring()
    by_index = {}
    for email in emails:
        for index in ring.blind_indexes(normalise_email(email)):
            by_index[index] = email
    rows = session.execute(select(User.email_index, User.id)
                           .where(User.email_index.in_(list(by_index)))).all()
    return {by_index[index]: user_id for index, user_id in rows}


def ensure_pools(session: Session) -> Pools:
    """Create the demo caseworkers, supervisors and journalists that are missing.

    Staff go through ``accounts.create_user`` (each with a TOTP secret); the
    200 journalists are written in bulk with one password hash shared by all,
    since hashing 200 Argon2id passwords would take longer than the cases.
    """
    found = _existing(session, CASEWORKERS + SUPERVISORS + JOURNALISTS)
    for email in CASEWORKERS + SUPERVISORS:
        if email not in found:
            role = "caseworker" if email.startswith("caseworker") else "supervisor"
            number = email.split("@")[0][len(role):]
            user, _ = accounts.create_user(session, None, email=email, role=role,
                                           password=POOL_PASSWORD, name=f"Demo {role} {number}",
                                           enrol_totp=True)
            found[email] = user.id
    missing = [email for email in JOURNALISTS if email not in found]
    if missing:
        ring = keyring()
        shared_hash = passwords.hash_password(POOL_PASSWORD)
        now = utcnow()
        rng = random.Random()
        rows = []
        for email in missing:
            user_id = new_row_id()
            name = f"{rng.choice(FIRST_NAMES_W + FIRST_NAMES_M)} {rng.choice(SURNAMES)} {rng.choice(SURNAMES)}"
            rows.append({
                "id": user_id, "role": "journalist", "password_hash": shared_hash, "active": True,
                "locale": None, "totp_secret": None, "totp_pending": None, "totp_enabled": False,
                "totp_last_step": None, "created_at": now, "password_changed_at": now,
                "last_login_at": None,
                "email": ring.seal(email.encode(), aad_for("users", "email_ct", user_id)),
                "email_index": ring.blind_index(normalise_email(email)),
                "name": ring.seal(name.encode(), aad_for("users", "name_ct", user_id)),
            })
            found[email] = user_id
        session.execute(insert(cast(Table, User.__table__)), rows)
        audit.record(session, "demo.accounts_created", role="journalist", count=len(rows))
    session.commit()
    return Pools([found[e] for e in CASEWORKERS], [found[e] for e in SUPERVISORS],
                 [found[e] for e in JOURNALISTS])


def pool_logins(session: Session) -> list[tuple[str, str, str | None]]:
    """(email, role, totp secret) of every demo pool staff account, for printing."""
    found = _existing(session, CASEWORKERS + SUPERVISORS)
    users = {u.id: u for u in session.execute(
        select(User).where(User.id.in_(list(found.values())))).scalars()}
    out = []
    for email in CASEWORKERS + SUPERVISORS:
        user = users.get(found[email]) if email in found else None
        if user is not None:
            out.append((email, user.role, user.totp_secret))
    return out


# -- synthetic values --------------------------------------------------------

FIRST_NAMES_W = ["María", "Guadalupe", "Lucía", "Ana", "Rosa", "Verónica", "Patricia", "Alejandra",
                 "Daniela", "Fernanda", "Carmen", "Leticia", "Gabriela", "Sofía", "Itzel", "Xóchitl",
                 "Marisol", "Paola", "Elena", "Adriana", "Miriam", "Norma", "Yolanda", "Citlali"]
FIRST_NAMES_M = ["José", "Juan", "Luis", "Carlos", "Miguel", "Jorge", "Alejandro", "Francisco",
                 "Javier", "Ricardo", "Roberto", "Eduardo", "Fernando", "Arturo", "Raúl", "Omar",
                 "Héctor", "Iván", "Emiliano", "Cuauhtémoc", "Rubén", "Gerardo", "Sergio", "Pedro"]
SURNAMES = ["Hernández", "García", "Martínez", "López", "González", "Pérez", "Rodríguez", "Sánchez",
            "Ramírez", "Cruz", "Flores", "Gómez", "Morales", "Vázquez", "Reyes", "Jiménez", "Torres",
            "Díaz", "Gutiérrez", "Ruiz", "Mendoza", "Aguilar", "Ortiz", "Castillo", "Romero",
            "Chávez", "Rivera", "Juárez", "Domínguez", "Salazar", "Navarro", "Villanueva"]
PSEUDONYMS = ["Colibrí", "Jaguar", "Quetzal", "Cenzontle", "Ocelote", "Halcón", "Tecolote",
              "Ajolote", "Garza", "Coyote", "Tlacuache", "Zopilote", "Venado", "Golondrina"]
COLLECTIVES = ["Colectivo de Periodistas de {m}", "Red de Comunicadoras de {m}",
               "Comité de Defensa Comunitaria de {m}", "Radio Comunitaria de {m}",
               "Observatorio Ciudadano de {m}", "Colectivo de Búsqueda de {m}"]
OUTLETS = {
    "print": ["Diario de {m}", "El Heraldo de {m}", "La Voz de {m}", "El Sol de la Región",
              "Semanario Crónica de {m}", "Noticias del Sur"],
    "radio": ["Radio Comunitaria {m}", "La Poderosa {f} FM", "Radio Vida {f} FM", "Estéreo {m}"],
    "tv": ["Canal {c} de {m}", "Televisora Regional de {m}", "Noticiero Visión {m}"],
    "digital": ["{m} al Instante", "Portal Noticias {m}", "Contraluz Noticias", "Reporte Regional",
                "Voces de {m}", "La Pluma Digital"],
    "community": ["Radio Comunitaria {m}", "Medio Comunitario Tierra y Voz", "Ecos de la Sierra"],
    "freelance": ["Independiente", "Colaboración libre para medios nacionales", "Corresponsal independiente"],
    "other": ["Blog personal", "Página de noticias en redes sociales", "Boletín comunitario"],
}
DEFENDER_ORGS = ["Centro de Derechos Humanos de {m}", "Comité de Familiares de Desaparecidos",
                 "Defensoría Comunitaria de {m}", "Asamblea de Pueblos de {m}",
                 "Colectivo por la Tierra de {m}"]
MUNICIPALITIES = {
    "AGS": ["Aguascalientes", "Jesús María"], "BC": ["Tijuana", "Mexicali", "Ensenada"],
    "BCS": ["La Paz", "Los Cabos"], "CAMP": ["Campeche", "Ciudad del Carmen"],
    "CHIS": ["Tuxtla Gutiérrez", "San Cristóbal de las Casas", "Tapachula", "Comitán"],
    "CHIH": ["Chihuahua", "Ciudad Juárez", "Guachochi", "Parral"],
    "CDMX": ["Iztapalapa", "Cuauhtémoc", "Gustavo A. Madero", "Coyoacán"],
    "COAH": ["Saltillo", "Torreón", "Piedras Negras"], "COL": ["Colima", "Manzanillo", "Tecomán"],
    "DGO": ["Durango", "Gómez Palacio"], "GTO": ["León", "Irapuato", "Celaya", "Salamanca"],
    "GRO": ["Chilpancingo", "Acapulco", "Iguala", "Taxco", "Chilapa", "Tlapa"],
    "HGO": ["Pachuca", "Tulancingo"], "JAL": ["Guadalajara", "Zapopan", "Puerto Vallarta", "Lagos de Moreno"],
    "MEX": ["Ecatepec", "Toluca", "Nezahualcóyotl", "Naucalpan", "Chalco"],
    "MICH": ["Morelia", "Uruapan", "Apatzingán", "Zitácuaro"], "MOR": ["Cuernavaca", "Cuautla", "Jiutepec"],
    "NAY": ["Tepic", "Bahía de Banderas"], "NL": ["Monterrey", "Guadalupe", "Apodaca"],
    "OAX": ["Oaxaca de Juárez", "Juchitán", "Salina Cruz", "Pinotepa Nacional", "Tuxtepec"],
    "PUE": ["Puebla", "Tehuacán", "Zacatlán"], "QRO": ["Querétaro", "San Juan del Río"],
    "QROO": ["Cancún", "Playa del Carmen", "Chetumal", "Tulum"], "SLP": ["San Luis Potosí", "Ciudad Valles"],
    "SIN": ["Culiacán", "Mazatlán", "Los Mochis"], "SON": ["Hermosillo", "Cajeme", "Nogales", "San Luis Río Colorado"],
    "TAB": ["Villahermosa", "Cárdenas"], "TAMPS": ["Reynosa", "Matamoros", "Nuevo Laredo", "Ciudad Victoria"],
    "TLAX": ["Tlaxcala", "Apizaco"], "VER": ["Xalapa", "Veracruz", "Coatzacoalcos", "Poza Rica", "Córdoba"],
    "YUC": ["Mérida", "Valladolid"], "ZAC": ["Zacatecas", "Fresnillo", "Jerez"],
}
# Where requests come from: weighted towards the states where the press is hit hardest.
STATE_WEIGHTS = {
    "GRO": 9, "VER": 9, "OAX": 8, "CDMX": 8, "CHIS": 6, "MICH": 6, "TAMPS": 5, "GTO": 5,
    "MEX": 6, "JAL": 4, "SIN": 4, "BC": 4, "CHIH": 5, "QROO": 4, "SON": 3, "MOR": 3, "PUE": 3,
    "ZAC": 3, "NL": 2, "COAH": 1, "COL": 2, "DGO": 1, "HGO": 1, "NAY": 1, "QRO": 1, "SLP": 1,
    "TAB": 2, "TLAX": 1, "YUC": 1, "AGS": 1, "BCS": 1, "CAMP": 1,
}
TOPICS = ["las desapariciones en la región", "el cobro de piso a comerciantes",
          "la corrupción en el ayuntamiento", "la minería ilegal", "el desvío de recursos de obra pública",
          "el despojo de tierras comunales", "la tala clandestina", "el robo de combustible",
          "los feminicidios en el municipio", "el narcomenudeo en la colonia",
          "contratos irregulares del gobierno estatal", "las fosas clandestinas",
          "abusos de la policía municipal", "la contaminación del río", "la campaña electoral local"]
OPENINGS = ["Después de publicar una investigación sobre {t},", "Desde que empecé a cubrir {t},",
            "Tras una transmisión en vivo sobre {t},", "A raíz de mis reportajes sobre {t},",
            "Luego de denunciar públicamente {t},"]
HAPPENINGS = {
    "threat": ["recibí mensajes diciendo que me iban a matar si seguía publicando.",
               "me dejaron una nota en la puerta con mi nombre y el de mis hijos.",
               "un hombre se acercó a decirme que \"ya sabían dónde vivo\"."],
    "aggression": ["dos hombres me golpearon a la salida de la redacción.",
                   "policías me empujaron y me quitaron el teléfono mientras grababa."],
    "surveillance": ["una camioneta sin placas se estaciona frente a mi casa varias noches.",
                     "me siguen en motocicleta cuando salgo a reportear."],
    "digital_attack": ["hackearon mi correo y publicaron mis datos personales.",
                       "intentaron entrar a mis cuentas y clonaron mi perfil para difamarme."],
    "smear": ["circulan publicaciones que me acusan de trabajar para un grupo criminal.",
              "un funcionario me señaló en conferencia como \"enemigo del pueblo\"."],
    "kidnapping": ["intentaron subirme a la fuerza a un vehículo.",
                   "me retuvieron varias horas y me interrogaron sobre mis fuentes."],
    "raid": ["entraron a mi domicilio y se llevaron la computadora y mis libretas.",
             "allanaron la oficina del medio sin orden judicial."],
    "judicial": ["me demandaron por daño moral para obligarme a retractarme.",
                 "abrieron una carpeta de investigación en mi contra por lo que publiqué."],
    "other": ["hostigan a mi familia en el mercado y en la escuela de mis hijos.",
              "me ofrecieron dinero para dejar de publicar y, al negarme, me advirtieron."],
}
CLOSINGS = ["Tengo miedo por mi familia.", "Ya presenté denuncia ante la fiscalía.",
            "No he denunciado por temor a represalias.", "Las amenazas continúan.",
            "Otros colegas de la zona han recibido amenazas parecidas.", ""]
PLACES = ["Domicilio particular", "Oficina del medio", "Vía pública, colonia Centro",
          "Carretera estatal", "Palacio municipal", "Mercado municipal", "Redes sociales",
          "Cerca de la escuela de mis hijos", "Estación de radio", "Comunidad rural"]
OTHERS_AT_RISK = ["Mi esposa y mis dos hijos", "Mi madre, que vive conmigo", "Mi pareja",
                  "Dos compañeros del medio", "Mis hijas menores de edad", "El equipo de la radio comunitaria"]
FACTORS = ["Amenazas reiteradas de un grupo con capacidad de daño demostrada en la zona.",
           "Agresor identificado con vínculos con autoridades locales.",
           "Antecedentes de agresiones a periodistas en el municipio.",
           "La persona vive sola y sus rutas son predecibles.",
           "Difusión de datos personales y del domicilio en redes sociales.",
           "Vigilancia constante del domicilio y del lugar de trabajo."]
RECOMMENDATIONS = ["Botón de asistencia y rondines policiales.",
                   "Cámaras y cerraduras en el domicilio; curso de autoprotección.",
                   "Reubicación temporal y acompañamiento.",
                   "Escolta y vehículo blindado mientras dure la cobertura.",
                   "Manuales de seguridad y seguimiento mensual."]
NOTES = ["Se llamó a la persona beneficiaria; confirma los hechos y agrega detalles.",
         "Pendiente respuesta de la fiscalía estatal sobre la denuncia.",
         "Se solicitó información adicional sobre el último incidente.",
         "La policía estatal no ha realizado los rondines acordados.",
         "Se verificó la instalación de las cámaras con la persona beneficiaria.",
         "Reunión con la autoridad municipal para coordinar las medidas.",
         "La persona no contesta; se intentará de nuevo mañana."]
MESSAGES_OUT = ["Recibimos su solicitud. Una persona de nuestro equipo le llamará hoy.",
                "¿Puede enviarnos capturas de pantalla de las amenazas?",
                "Las medidas fueron solicitadas a la autoridad; le avisaremos cuando se implementen.",
                "Le recordamos la revisión de sus medidas la próxima semana."]
MESSAGES_IN = ["Gracias, quedo pendiente.", "Les envío las capturas que pidieron.",
               "Siguen pasando por mi casa por las noches.", "La patrulla no ha venido esta semana."]
APPEAL_GROUNDS = ["El riesgo no fue valorado con toda la información que entregué.",
                  "Las amenazas continúan y se agravaron después de la decisión.",
                  "No se consideró que soy periodista comunitaria."]
REVIEW_NOTES = ["El riesgo persiste; se mantienen las medidas.", "Disminuyó el riesgo tras la detención del agresor.",
                "La persona cambió de domicilio; se ajustan las medidas.", ""]

INCIDENT_KINDS = (["threat"] * 35 + ["smear"] * 10 + ["surveillance"] * 10 + ["aggression"] * 10
                  + ["digital_attack"] * 10 + ["judicial"] * 7 + ["raid"] * 4 + ["kidnapping"] * 3
                  + ["other"] * 5)
AGGRESSORS = (["criminal_group"] * 25 + ["official_municipal"] * 20 + ["official_state"] * 12
              + ["official_federal"] * 5 + ["private"] * 12 + ["unknown"] * 26)
CHANNEL_BY_KIND = {
    "threat": ["messaging", "in_person", "phone", "social_network"],
    "smear": ["social_network", "social_network", "other"],
    "digital_attack": ["social_network", "messaging", "other"],
}
PLATFORMS = ["facebook"] * 35 + ["x"] * 20 + ["whatsapp"] * 15 + ["tiktok"] * 10 + \
    ["instagram"] * 8 + ["youtube"] * 5 + ["telegram"] * 4 + ["other"] * 3
# platform -> (share of reports it ever answers, median days to answer)
PLATFORM_RESPONSE = {"facebook": (0.8, 3), "x": (0.5, 9), "instagram": (0.75, 3), "tiktok": (0.8, 2),
                     "youtube": (0.7, 5), "whatsapp": (0.3, 10), "telegram": (0.2, 20), "other": (0.3, 15)}
URGENT_KINDS = ["escort", "escort", "relocation", "evacuation", "premises", "panic_button", "phone"]
PROTECTION_KINDS = ["panic_button"] * 5 + ["cameras"] * 4 + ["patrols"] * 4 + ["phone"] * 3 + \
    ["locks"] * 2 + ["lighting"] * 2 + ["vest"] + ["armoured_car"] + ["escort"]
PREVENTIVE_KINDS = ["training", "accompaniment", "manuals"]
# authority -> median days to implement once requested
AUTHORITY_DAYS = {"federal": 12, "state": 22, "municipal": 35, "private": 6}
AUTHORITY_BY_KIND = {
    "escort": ["federal", "federal", "state"], "patrols": ["municipal", "state", "state"],
    "armoured_car": ["federal"], "relocation": ["federal", "private"], "evacuation": ["federal"],
    "premises": ["state", "municipal"], "panic_button": ["private", "federal"], "phone": ["private"],
    "cameras": ["private", "state"], "locks": ["private"], "lighting": ["municipal", "private"],
    "vest": ["federal"], "training": ["federal", "private"], "accompaniment": ["state", "federal"],
    "manuals": ["federal"],
}
CLOSE_REASONS = ["risk_ended"] * 50 + ["non_cooperation"] * 25 + ["petitioner_request"] * 12 + \
    ["other"] * 10 + ["death"] * 1
NOT_ADMITTED = ["not_beneficiary"] * 30 + ["unrelated_to_work"] * 30 + ["duplicate"] * 10 + \
    ["no_consent"] * 5 + ["insufficient_information"] * 20 + ["other"] * 5
INTAKE_STEPS = getattr(service, "INTAKE_STEPS", 5)  # a sent request went through every step
OUTLET_KINDS = tuple(OUTLETS)
URGENT_CHOICES = sorted(set(URGENT_KINDS))
_CUMULATIVE: dict[tuple, list[float]] = {}
OPEN = frozenset({"received", "triage", "urgent_measures", "risk_assessment", "board_decision",
                  "implementation", "active", "review", "appeal"})


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_NAIVE = datetime(1970, 1, 1)


def _utc(ts: float) -> datetime:
    return EPOCH + timedelta(seconds=ts)


def _sqlite_datetime(ts: float) -> str:
    # SQLAlchemy's SQLite DATETIME storage format of the UTC time (what UTCDateTime binds).
    return (EPOCH_NAIVE + timedelta(seconds=ts)).isoformat(" ", "microseconds")


def _local_date(ts: float) -> date:
    return datetime.fromtimestamp(ts, MEXICO).date()


class _Stop(Exception):
    """The simulated case has reached "now" (or was withdrawn): stop it there."""


TABLES = (Case, Incident, OnlineThreat, RiskAssessment, BoardDecision, Measure, Review, Appeal,
          Note, Message, CaseEvent)


class _Writer:
    """Turns a batch's rows into bulk statements, without ORM or per-row Core overhead.

    PostgreSQL gets ``COPY ... FROM STDIN``, its values converted by the
    writer (``_execute``: UTC times to datetimes, JSON to text), which has
    time to spare, where the generating side has none (and floats cost it
    far less to send than datetimes). SQLite gets a plain ``executemany``
    with values already in the form SQLAlchemy would bind (UTC datetimes in
    its text format, JSON as text). Rows are dicts keyed by column name, UTC
    times as POSIX timestamps (floats); a column missing from them gets its
    default or NULL. Rows go in key order (events grouped by case, in their
    order), so the random-id indexes and foreign-key look-ups walk their pages
    once, in order.
    """

    def __init__(self, dialect: str):
        self.dialect = dialect
        self.plans: dict[str, tuple] = {}  # table name → what _plan returns

    def _plan(self, table, sample: dict):
        sqlite = self.dialect == "sqlite"
        names: list[str] = []
        fill: dict[str, Any] = {}
        convert: list[tuple[int, Callable[[Any], Any]]] = []
        for column in table.columns:
            if column.primary_key and isinstance(column.type, Integer) and column.name not in sample:
                continue  # autoincrement id
            names.append(column.name)
            if column.name not in sample:
                default = column.default
                value = (default.arg if default is not None and default.is_scalar
                         else default.arg(None) if default is not None and default.is_callable
                         else None)
                fill[column.name] = value.timestamp() if isinstance(value, datetime) else value
            kind = column.type
            if isinstance(kind, JSON):
                convert.append((len(names) - 1, json.dumps))
            elif isinstance(kind, UTCDateTime):  # rows hold POSIX timestamps
                convert.append((len(names) - 1, _sqlite_datetime if sqlite else _utc))
            elif sqlite and isinstance(kind, Date):
                convert.append((len(names) - 1, date.isoformat))
        getter = itemgetter(*names)
        if self.dialect == "postgresql":
            statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
        else:
            statement = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        return fill, convert, getter, statement

    def statements(self, batch: _Batch) -> list[tuple[str, list, list]]:
        """(statement, values, conversions left to the writer) for every table of ``batch``, parents first."""
        out = []
        for model in TABLES:
            rows = batch.rows[model]
            if not rows:
                continue
            rows.sort(key=itemgetter("case_id" if model is CaseEvent else "id"))
            plan = self.plans.get(model.__tablename__)
            if plan is None:
                plan = self.plans[model.__tablename__] = self._plan(model.__table__, rows[0])
            fill, convert, getter, statement = plan
            here, later = (convert, []) if self.dialect == "sqlite" else ([], convert)
            values = []
            for row in rows:
                if fill:
                    row = {**fill, **row}
                value = list(getter(row))
                _convert(value, here)
                values.append(value)
            out.append((statement, values, later))
        return out


def _convert(value: list, conversions: list) -> None:
    for index, fn in conversions:
        if value[index] is not None:
            value[index] = fn(value[index])


def _execute(raw, dialect: str, statements: list[tuple[str, list, list]], skip_fk_triggers: bool) -> None:
    """Run a batch's statements on a DBAPI connection, in its current transaction."""
    if dialect == "sqlite":
        for statement, values, _ in statements:
            raw.executemany(statement, values)
        return
    with raw.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO OFF")  # demo data: no wait for each flush
        if skip_fk_triggers:
            cursor.execute("SET LOCAL session_replication_role TO replica")
        for statement, values, later in statements:
            with cursor.copy(statement) as copy:
                for value in values:
                    _convert(value, later)
                    copy.write_row(value)


def _may_skip_fk_triggers(connection) -> bool:
    """Whether PostgreSQL's per-row foreign-key triggers may be skipped on this connection.

    They cost more than the rest of the load together, and the generator's keys
    hold by construction (the tests check them). Only a superuser may skip them
    (``session_replication_role``, set per transaction); for anyone else they
    run. SQLite's checks are cheap and always on.
    """
    return connection.dialect.name == "postgresql" and connection.exec_driver_sql(
        "SELECT current_setting('is_superuser')").scalar() == "on"


def _writer_stdio() -> None:
    """The writer process (``python -c``): batches as pickles on stdin, one "." on stdout per
    batch written. A plain DBAPI connection, one transaction per batch.

    A process rather than a thread, so that making the next batch and writing
    this one (SQLite's binding and B-trees, psycopg's COPY) use two cores
    instead of taking turns at one interpreter lock; started with ``-c`` rather
    than multiprocessing, so that nothing of the caller (its main module, its
    threads, its pooled connections) is imported or inherited.
    """
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    dialect, dsn, skip_fk_triggers = pickle.load(stdin)
    raw: sqlite3.Connection | psycopg.Connection
    if dialect == "sqlite":
        import sqlite3
        raw = sqlite3.connect(dsn)
        # The app's pragmas, plus a big page cache for the random-key indexes and no
        # fsync per batch (generated data: a crash loses at most the batches in flight).
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=5000",
                       "cache_size=-262144", "synchronous=OFF"):
            raw.execute(f"PRAGMA {pragma}")
    else:
        import psycopg
        raw = psycopg.connect(dsn)
    with closing(raw):
        while True:
            try:
                statements = pickle.load(stdin)
            except EOFError:
                break
            _execute(raw, dialect, statements, skip_fk_triggers)
            raw.commit()
            stdout.write(b".")
            stdout.flush()


class _WriterProcess:
    """The generating side of ``_writer_stdio``. Writing a batch blocks while the
    previous one is being written (the pipe is small), so at most one waits."""

    def __init__(self, engine, skip_fk_triggers: bool):
        url = engine.url
        dsn = url.database if engine.dialect.name == "sqlite" else \
            url.set(drivername="postgresql").render_as_string(hide_password=False)
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from protect.cases.demo import _writer_stdio; _writer_stdio()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.sent = 0
        self._send((engine.dialect.name, dsn, skip_fk_triggers))

    def _send(self, item) -> None:
        try:
            stdin = cast(IO[bytes], self.process.stdin)  # a PIPE, so never None
            pickle.dump(item, stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
        except (BrokenPipeError, OSError):
            self._fail()

    def _fail(self):
        self.process.kill()
        _, err = self.process.communicate()
        raise RuntimeError("the demo writer process failed:\n" + err.decode(errors="replace")[-4000:])

    def put(self, statements) -> None:
        self._send(statements)
        self.sent += 1

    def close(self, *, failed: bool = False) -> None:
        """Wait until every batch is written (after a failure here, just stop it)."""
        if failed:
            self.process.kill()
            self.process.communicate()
            return
        try:
            out, err = self.process.communicate(timeout=600)  # closes stdin: the writer finishes
        except subprocess.TimeoutExpired:
            self._fail()
        if self.process.returncode != 0 or out.count(b".") != self.sent:
            raise RuntimeError("the demo writer process failed:\n" + err.decode(errors="replace")[-4000:])


class _Batch:
    def __init__(self):
        self.rows = {model: [] for model in TABLES}


class _Generator:
    def __init__(self, session: Session, pools: Pools, rng: random.Random, now: datetime, n: int):
        self.rng = rng
        self.ring = keyring()
        self.now = now.timestamp()
        self.start = self.now - YEARS * 365 * DAY
        self.pools = pools
        cw = len(pools.caseworkers)
        # Caseloads and habits differ: some caseworkers carry more, some are slower.
        self.cw_range = tuple(range(cw))
        self.cw_weights = tuple(rng.uniform(0.6, 1.4) for _ in range(cw))
        self.cw_speed = [rng.lognormvariate(0, 0.35) for _ in range(cw)]
        # A few cases per pool journalist; the rest are phone intakes (no account).
        self.p_petitioner = min(0.5, 4 * len(pools.journalists) / max(n, 1))
        self.states = list(STATE_WEIGHTS)
        self.state_weights = tuple(STATE_WEIGHTS.values())
        self.refs = set(session.execute(select(Case.reference)).scalars())
        self._refbytes, self._refpos = b"", 0

    # -- helpers -----------------------------------------------------------
    def seal(self, table: str, attr: str, row_id: str, value: str | None) -> bytes | None:
        if value is None:
            return None
        return self.ring.seal(value.encode(), aad_for(table, attr, row_id))

    def reference(self) -> str:
        """A random reference like the service's (``PRT-XXXX-XXXX``), unique in the database."""
        while True:
            chars: list[str] = []
            while len(chars) < 8:
                if self._refpos >= len(self._refbytes):
                    self._refbytes, self._refpos = os.urandom(4096), 0
                b = self._refbytes[self._refpos]
                self._refpos += 1
                if b < 240:  # 240 = 8 × 30: unbiased
                    chars.append(REF_ALPHABET[b % 30])
            ref = f"PRT-{''.join(chars[:4])}-{''.join(chars[4:])}"
            if ref not in self.refs:
                self.refs.add(ref)
                return ref

    def pick(self, options, weights):
        """``rng.choices(options, weights)[0]``, without summing the weights every time."""
        cum = _CUMULATIVE.get(weights)
        if cum is None:
            cum = _CUMULATIVE[weights] = list(accumulate(weights))
        return options[bisect(cum, self.rng.random() * cum[-1])]

    def hours(self, median: float, sigma: float) -> float:
        """A skewed delay in seconds: ``median`` hours, long right tail."""
        return median * HOUR * math.exp(self.rng.gauss(0.0, sigma))

    def days(self, median: float, sigma: float) -> float:
        return median * DAY * math.exp(self.rng.gauss(0.0, sigma))

    def at(self, t: float) -> float:
        """Move the case's clock to ``t``, unless now or the petitioner's withdrawal comes first."""
        if self.drop is not None and self.drop < t and self.status in OPEN:
            if self.drop <= self.now:
                self.event(self.drop, "withdrawn", self.petitioner or self.assignee)
                self.set_status("withdrawn", self.drop)
                self.case["outcome_reason"] = "petitioner_request"
            raise _Stop
        if t > self.now:
            raise _Stop
        self.t = t
        return t

    def event(self, t: float, kind: str, actor: str | None, **data) -> None:
        self.seq += 1
        self.events.append((t, self.seq, kind, actor, data))

    def set_status(self, status: str, t: float) -> None:
        self.status = status
        self.transitions += 1
        self.case["closed_at"] = t if status in ("closed", "withdrawn", "not_admitted") else None

    def pick_caseworker(self) -> int:
        return self.pick(self.cw_range, self.cw_weights)

    def assignee_at(self, t: float) -> str | None:
        who = None
        for since, user_id in self.assignments:
            if since <= t:
                who = user_id
        return who

    # -- one case ----------------------------------------------------------
    def case_rows(self, b: _Batch) -> None:
        rng = self.rng
        self.rows = b.rows
        self.events: list[tuple[float, int, str, str | None, dict]] = []  # (at, seq, kind, actor, data)
        # steps that change no case state, kept if they fall before the end: (at, kind, extra, payload)
        self.side: list[tuple[float, str, Any, Any]] = []
        self.seq = 0
        self.transitions = 0
        self.assignments: list[tuple[float, str]] = []
        self.measures: list[dict] = []
        self.threats: list[dict] = []
        self.drop: float | None = None
        self.petitioner: str | None = None
        self.assignee: str | None = None
        case_id = self.case_id = new_row_id()
        age = YEARS * 365 * DAY * rng.random() ** 1.25  # more requests lately
        submitted = self.now - age
        era = 0.8 + 0.6 * age / (YEARS * 365 * DAY)  # the early years were slower
        self.status = "received"
        danger = rng.random() < 0.10
        beneficiary = self.pick(("journalist", "defender", "collective"), (62, 33, 5))
        gender = None if beneficiary == "collective" else self.pick(
            ("woman", "man", "nonbinary", "undisclosed"), (42, 52, 2, 4))
        state = self.pick(self.states, self.state_weights)
        municipality = self.municipality = rng.choice(MUNICIPALITIES[state])
        kind = self.pick(OUTLET_KINDS, (25, 15, 8, 25, 12, 12, 3)) if beneficiary == "journalist" else None
        pseudonymous = rng.random() < 0.12
        real_name = self.person_name(gender)
        if beneficiary == "collective":
            name = rng.choice(COLLECTIVES).format(m=municipality)
            pseudonymous = False
        elif pseudonymous:
            name = f"{rng.choice(PSEUDONYMS)} {rng.randint(1, 99)}"
        else:
            name = real_name
        if kind:
            outlet = rng.choice(OUTLETS[kind]).format(m=municipality, f=f"{rng.uniform(88, 108):.1f}",
                                                     c=rng.randint(2, 13))
        else:
            outlet = rng.choice(DEFENDER_ORGS).format(m=municipality)
        contact = (f"+52 {rng.randint(200, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}"
                   if rng.random() < 0.8 else f"Signal +52 {rng.randint(200, 999)} {rng.randint(1000000, 9999999)}")
        others = rng.choice(OTHERS_AT_RISK) if rng.random() < 0.4 else None
        petitioner = rng.choice(self.pools.journalists) if rng.random() < self.p_petitioner else None
        self.petitioner = petitioner
        intake_cw = self.pools.caseworkers[self.pick_caseworker()]
        filed_by = petitioner or intake_cw  # no account: a caseworker filed it from a phone call
        draft = rng.random() < 0.006
        created = submitted - self.hours(0.4, 1.6)
        seal = self.seal
        self.case = case = {
            "id": case_id, "reference": self.reference(), "status": "received", "procedure": None,
            "immediate_danger": danger, "beneficiary_type": beneficiary, "gender": gender,
            "state_code": state, "journalism_kind": kind, "pseudonymous": pseudonymous,
            "risk_level": None, "outcome_reason": None, "petitioner_id": petitioner,
            "filed_by_id": filed_by, "assignee_id": None, "intake_step": INTAKE_STEPS,
            "consent_at": submitted, "created_at": created, "submitted_at": submitted,
            "updated_at": submitted, "closed_at": None, "version": 1,
            "name": seal("cases", "name_ct", case_id, name),
            "real_identity": seal("cases", "real_identity_ct", case_id, real_name if pseudonymous else None),
            "contact": seal("cases", "contact_ct", case_id, contact),
            "outlet": seal("cases", "outlet_ct", case_id, outlet),
            "municipality": seal("cases", "municipality_ct", case_id, municipality),
            "others_at_risk": seal("cases", "others_at_risk_ct", case_id, others),
        }
        self.rows[Case].append(case)
        self.incidents(case_id, created, submitted, municipality, draft)
        if draft:  # an unfinished request: no events, nobody sees it but its author
            case.update(status="draft", submitted_at=None, consent_at=None, immediate_danger=False,
                        intake_step=rng.randint(1, 3),
                        updated_at=min(self.now, created + self.hours(0.2, 1.0)))
            return
        # The petitioner drops out (withdraws) in a few cases.
        self.drop = submitted + self.days(90, 1.0) if rng.random() < 0.06 else None
        self.t = submitted
        self.event(submitted, "submitted", filed_by, immediate_danger=danger)
        try:
            self.workflow(submitted, danger, era)
        except _Stop:
            pass
        self.finish()

    def person_name(self, gender: str | None) -> str:
        rng = self.rng
        first = rng.choice(FIRST_NAMES_W if gender == "woman" or (gender != "man" and rng.random() < 0.5)
                           else FIRST_NAMES_M)
        return f"{first} {rng.choice(SURNAMES)} {rng.choice(SURNAMES)}"

    def narrative(self, kind: str) -> str:
        rng = self.rng
        text = f"{rng.choice(OPENINGS).format(t=rng.choice(TOPICS))} {rng.choice(HAPPENINGS[kind])}"
        closing = rng.choice(CLOSINGS)
        return f"{text} {closing}" if closing else text

    def incidents(self, case_id: str, created: float, submitted: float, municipality: str, draft: bool) -> None:
        rng = self.rng
        self.online = False
        self.first_incident: str | None = None
        count = self.pick((1, 2, 3), (60, 28, 12)) if not draft or rng.random() < 0.5 else 0
        for _ in range(count):
            self.incident(case_id, created, submitted - self.days(10, 1.3), municipality, event=False)
        if count and (self.online or rng.random() < 0.08):
            for _ in range(self.pick((1, 2), (75, 25))):
                self.online_threat(case_id, created)

    def incident(self, case_id, created: float, occurred: float, municipality: str, *, event: bool) -> None:
        rng = self.rng
        kind = rng.choice(INCIDENT_KINDS)
        channel = rng.choice(CHANNEL_BY_KIND.get(kind, ["in_person", "in_person", "phone", "other"]))
        if channel in ("social_network", "messaging") and rng.random() < 0.8:
            self.online = True
        incident_id = new_row_id()
        place = rng.choice(PLACES) if rng.random() < 0.85 else None
        if place and rng.random() < 0.5:
            place = f"{place}, {municipality}"
        occurred = max(occurred, self.start - 2 * 365 * DAY)
        row = {
            "id": incident_id, "case_id": case_id, "occurred_on": _local_date(occurred), "kind": kind,
            "aggressor": rng.choice(AGGRESSORS), "channel": channel, "created_at": created,
            "place": self.seal("incidents", "place_ct", incident_id, place),
            "narrative": self.seal("incidents", "narrative_ct", incident_id, self.narrative(kind)),
        }
        if event:  # reported later, by the caseworker: kept if it happens before the end
            self.side.append((created, "incident_added", row, {"incident": incident_id, "type": kind}))
            return
        self.rows[Incident].append(row)
        if self.first_incident is None:
            self.first_incident = incident_id

    def online_threat(self, case_id: str, created: float) -> None:
        rng = self.rng
        platform = rng.choice(PLATFORMS)
        threat_id = new_row_id()
        handle = f"{rng.choice(('noticias', 'verdad', 'alerta', 'anon', 'el_vigilante', 'pueblo'))}_{rng.randint(10, 9999)}"
        locator = {
            "facebook": f"https://www.facebook.com/profile.php?id={rng.randrange(10**14, 10**15)}",
            "x": f"https://x.com/{handle}/status/{rng.randrange(10**18, 10**19)}",
            "instagram": f"https://www.instagram.com/{handle}/",
            "tiktok": f"https://www.tiktok.com/@{handle}",
            "youtube": f"https://www.youtube.com/@{handle}",
            "whatsapp": f"+52 {rng.randint(200, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
            "telegram": f"https://t.me/{handle}",
        }.get(platform, f"@{handle}")
        row = {"id": threat_id, "case_id": case_id,
               "incident_id": self.first_incident if rng.random() < 0.7 else None,
               "platform": platform, "created_at": created, "reported_at": None,
               "platform_report_id": None, "outcome": None, "responded_at": None, "removed_at": None,
               "locator": self.seal("online_threats", "locator_ct", threat_id, locator)}
        self.rows[OnlineThreat].append(row)
        self.threats.append(row)

    # -- the workflow --------------------------------------------------------
    def workflow(self, submitted: float, danger: bool, era: float) -> None:
        rng = self.rng
        case = self.case
        cw_index = self.pick_caseworker()
        speed = self.cw_speed[cw_index] * era
        caseworker = self.pools.caseworkers[cw_index]
        supervisor = rng.choice(self.pools.supervisors)
        # Assignment: a caseworker takes the request, or a supervisor assigns it.
        t = self.at(submitted + (self.hours(0.5, 1.0) if danger else self.hours(5, 1.4) * speed))
        self.assignee = caseworker
        self.assignments.append((t, caseworker))
        self.event(t, "assigned", caseworker if rng.random() < 0.7 else supervisor,
                   assignee=caseworker, previous=None)
        self.set_status("triage", t)
        self.platform_reports(t)
        # Triage: hours when things go well; days, sometimes months, when they do not.
        delay = self.hours(1.0, 1.0) if danger else self.hours(6, 1.5) * speed
        if rng.random() < 0.08:
            delay += self.days(20, 1.0)
        t = self.at(t + delay)
        extraordinary = False
        if rng.random() < (0.03 if danger else 0.13):
            reason = rng.choice(NOT_ADMITTED)
            case["outcome_reason"] = reason
            self.event(t, "triaged", caseworker, procedure="not_admitted", reason=reason)
            self.set_status("not_admitted", t)
            if not self.appeal(t, p=0.12):
                return
            t = self.t  # upheld: assessed after all
        else:
            extraordinary = rng.random() < (0.8 if danger else 0.04)
            case["procedure"] = "extraordinary" if extraordinary else "ordinary"
            self.event(t, "triaged", caseworker, procedure=case["procedure"])
            self.set_status("urgent_measures" if extraordinary else "risk_assessment", t)
        if extraordinary:
            declared = t
            delay = self.hours(2.2, 0.8) + (self.days(3, 1.0) if rng.random() < 0.07 else 0)
            t = self.at(t + delay)
            kinds = rng.sample(URGENT_CHOICES, self.pick((1, 2, 3), (40, 45, 15)))
            urgent = [self.measure(kind, t, urgent=True, status="requested") for kind in kinds]
            self.event(t, "urgent_measures_issued", self.assignee, measures=kinds)
            delay = self.hours(7, 0.9) + (self.days(5, 1.0) if rng.random() < 0.15 else 0)
            t = self.at(max(t + self.hours(0.5, 0.5), declared + delay))
            for m in urgent:
                m["status"], m["implemented_at"] = "implemented", t
            self.event(t, "urgent_measures_implemented", self.assignee)
            self.set_status("risk_assessment", t)
        while True:  # assessment and decision; again after an upheld appeal
            delay = self.days(11, 0.55) * speed
            if rng.random() < 0.12:
                delay += self.days(45, 0.8)
            t = self.at(t + delay)
            if rng.random() < 0.03:  # reassigned along the way
                new = self.pools.caseworkers[self.pick_caseworker()]
                if new != self.assignee:
                    self.event(t, "assigned", supervisor, assignee=new, previous=self.assignee)
                    self.assignee = new
                    self.assignments.append((t, new))
                t = self.at(t + self.hours(20, 1.0))
            level = self.pick(("ordinary", "high", "extraordinary"),
                              (10, 50, 40) if danger else (40, 48, 12))
            self.assessment(t, level)
            case["risk_level"] = level
            self.event(t, "assessment_done", self.assignee, level=level)
            self.set_status("board_decision", t)
            t = self.at(t + self.days(12, 0.6))  # the board meets every week or two, when it meets
            denied_share = {"ordinary": 45, "high": 8, "extraordinary": 3}[level]
            outcome = self.pick(("granted", "partly_granted", "denied"), (75, 20, denied_share))
            reason = {"granted": "risk_confirmed", "partly_granted": "risk_partly_confirmed"}.get(
                outcome) or self.pick(("risk_not_confirmed", "measures_elsewhere", "other"), (6, 1, 1))
            decision_id = new_row_id()
            decision = {"id": decision_id, "case_id": self.case_id, "outcome": outcome, "reason": reason,
                        "author_id": supervisor, "decided_on": _local_date(t), "created_at": t,
                        "communicated_at": None}
            self.rows[BoardDecision].append(decision)
            if outcome == "denied":
                case["outcome_reason"] = "denied"
                self.event(t, "decision_made", supervisor, outcome=outcome, reason=reason)
                self.set_status("closed", t)
                if self.appeal(t, p=0.25):
                    t = self.t
                    continue
                return
            break
        kinds = self.decided_kinds(level)
        decided = [self.measure(kind, t, urgent=False, status="decided", decision=decision_id) for kind in kinds]
        self.event(t, "decision_made", supervisor, outcome=outcome, reason=reason, measures=kinds)
        self.set_status("implementation", t)
        for m in self.measures:  # urgent measures give way to the decided ones
            if m["urgent"] and m["status"] != "withdrawn" and rng.random() < 0.6:
                self.side.append((t + self.days(5, 0.8), "withdraw", None, m))
        delay = self.hours(40, 0.9) + (self.days(12, 0.8) if rng.random() < 0.1 else 0)
        t = self.at(t + delay)
        decision["communicated_at"] = t
        for m in decided:
            m["status"], m["requested_at"] = "requested", t
        self.event(t, "decision_communicated", self.assignee, decision=decision_id)
        # Each authority implements at its own pace; the case is protected when all have.
        plan = []
        for m in decided:
            delay = self.days(AUTHORITY_DAYS[m["authority"]], 0.9) * era
            if rng.random() < 0.06:
                delay += self.days(90, 0.6)
            plan.append((t + delay, m))
        plan.sort(key=lambda item: item[0])
        for when, m in plan:
            t = self.at(when)
            self.advance(m, "implemented", t)
            if rng.random() < 0.35:
                self.side.append((t + self.days(4, 0.8), "active", None, m))
        self.event(t, "measures_implemented", self.assignee)
        self.set_status("active", t)
        self.active_life(t, supervisor)

    def active_life(self, t: float, supervisor: str) -> None:
        rng = self.rng
        case = self.case
        if rng.random() < 0.05:  # a new incident while protected
            when = t + self.days(60, 1.0)
            self.incident(self.case_id, when, when - self.days(2, 0.8), self.municipality, event=True)
        while True:
            review_due = t + self.days(180, 0.12) + (self.days(80, 0.6) if rng.random() < 0.15 else 0)
            other_end = t + rng.expovariate(1 / (4 * 365 * DAY))
            if other_end < review_due:
                t = self.at(other_end)
                reason = rng.choice(CLOSE_REASONS)
                case["outcome_reason"] = reason
                self.event(t, "closed", rng.choice((self.assignee, supervisor)), reason=reason)
                self.set_status("closed", t)
                return
            t = self.at(review_due)
            self.event(t, "review_started", self.assignee)
            self.set_status("review", t)
            t = self.at(t + self.days(8, 0.8))
            self.flush_side(t)
            outcome = self.pick(("maintain", "modify", "withdraw"), (60, 15, 25))
            review_id = new_row_id()
            note = rng.choice(REVIEW_NOTES) or None
            self.rows[Review].append({"id": review_id, "case_id": self.case_id, "outcome": outcome,
                                      "author_id": self.assignee, "created_at": t,
                                      "notes": self.seal("reviews", "notes_ct", review_id, note)})
            self.event(t, "review_done", self.assignee, outcome=outcome)
            if outcome == "withdraw":  # as service.record_review: every measure withdrawn, no events
                for m in self.measures:
                    if m["status"] != "withdrawn":
                        m["status"], m["withdrawn_at"] = "withdrawn", t
                case["outcome_reason"] = "measures_withdrawn"
                self.set_status("closed", t)
                return
            self.set_status("active", t)
            if outcome == "modify":
                live = [m for m in self.measures if not m["urgent"] and m["status"] != "withdrawn"]
                if len(live) > 1:
                    t = self.at(t + self.days(3, 0.8))
                    self.advance(rng.choice(live), "withdrawn", t)

    def appeal(self, t: float, *, p: float) -> bool:
        """An inconformidad against a refusal; True when upheld (assessed again)."""
        rng = self.rng
        if rng.random() >= p:
            return False
        t = self.at(t + self.days(9, 0.6))
        appeal_id = new_row_id()
        appeal = {"id": appeal_id, "case_id": self.case_id, "filed_at": t, "study_received_at": None,
                  "resolved_at": None, "outcome": None,
                  "grounds": self.seal("appeals", "grounds_ct", appeal_id, rng.choice(APPEAL_GROUNDS))}
        self.rows[Appeal].append(appeal)
        self.event(t, "appeal_filed", self.petitioner or self.assignee)
        self.set_status("appeal", t)
        t = self.at(t + self.days(25, 0.6))
        appeal["study_received_at"] = t
        self.event(t, "study_received", self.assignee)
        t = self.at(t + self.days(12, 0.8))  # 15 natural days allowed
        outcome = "upheld" if rng.random() < 0.3 else "rejected"
        appeal["outcome"], appeal["resolved_at"] = outcome, t
        self.event(t, "appeal_resolved", self.assignee, outcome=outcome)
        if outcome == "upheld":
            self.case["outcome_reason"] = None
            self.case["procedure"] = self.case["procedure"] or "ordinary"
            self.set_status("risk_assessment", t)
            return True
        self.set_status("closed", t)
        return False

    def decided_kinds(self, level: str) -> list[str]:
        rng = self.rng
        low, high = {"ordinary": (1, 2), "high": (2, 3), "extraordinary": (3, 4)}[level]
        kinds = set(rng.sample(PROTECTION_KINDS, rng.randint(low, high)))
        if rng.random() < 0.6:
            kinds.add(rng.choice(PREVENTIVE_KINDS))
        return sorted(kinds)

    def measure(self, kind: str, t: float, *, urgent: bool, status: str, decision: str | None = None) -> dict:
        row = {"id": new_row_id(), "case_id": self.case_id, "decision_id": decision, "kind": kind,
               "urgent": urgent, "authority": self.rng.choice(AUTHORITY_BY_KIND[kind]), "status": status,
               "decided_at": t, "requested_at": t if status == "requested" else None,
               "implemented_at": None, "active_at": None, "withdrawn_at": None}
        self.rows[Measure].append(row)
        self.measures.append(row)
        return row

    def advance(self, m: dict, to: str, t: float) -> None:
        """As ``service.advance_measure``: fill the skipped steps' dates, write the event."""
        flow = MEASURE_FLOW
        for step in flow[flow.index(m["status"]) + 1: flow.index(to) + 1]:
            if m[f"{step}_at"] is None:
                m[f"{step}_at"] = t
        m["status"] = to
        self.event(t, f"measure_{to}", self.assignee_at(t) or self.assignee, measure=m["id"],
                   measure_type=m["kind"], authority=m["authority"], urgent=m["urgent"])

    def flush_side(self, until: float) -> None:
        """Apply the pending measure steps due by ``until`` (they change what is live)."""
        keep = []
        for item in self.side:
            when, kind, _, m = item
            if kind in ("active", "withdraw") and when <= until:
                self.apply_side_measure(when, kind, m)
            else:
                keep.append(item)
        self.side = keep

    def apply_side_measure(self, when: float, kind: str, m: dict) -> None:
        if kind == "active" and m["status"] == "implemented":
            self.advance(m, "active", when)
        elif kind == "withdraw" and m["status"] in ("requested", "implemented", "active"):
            self.advance(m, "withdrawn", when)

    def platform_reports(self, assigned: float) -> None:
        """The caseworker reports each online threat to its platform; platforms answer, or not."""
        rng = self.rng
        for row in self.threats:
            if rng.random() >= 0.75:
                continue
            reported = assigned + self.days(1.5, 1.0)
            if reported > self.now:
                continue
            answers, median = PLATFORM_RESPONSE[row["platform"]]
            row["reported_at"] = reported
            row["platform_report_id"] = str(rng.randrange(10**9, 10**15))
            recorded = reported
            outcome = "pending"
            if rng.random() < answers:
                responded = reported + self.days(median, 1.1)
                if responded <= self.now:
                    outcome = self.pick(("removed", "restricted", "no_action"), (45, 15, 40))
                    row["responded_at"] = recorded = responded
                    if outcome == "removed":
                        row["removed_at"] = recorded = min(self.now, responded + self.hours(6, 1.0))
            row["outcome"] = outcome
            self.side.append((recorded, "platform_report", None,
                              {"threat": row["id"], "platform": row["platform"], "outcome": outcome}))

    def assessment(self, t: float, level: str) -> None:
        rng = self.rng
        assessment_id = new_row_id()
        factors = " ".join(rng.sample(FACTORS, rng.randint(1, 3)))
        self.rows[RiskAssessment].append({
            "id": assessment_id, "case_id": self.case_id, "level": level, "author_id": self.assignee,
            "created_at": t,
            "factors": self.seal("risk_assessments", "factors_ct", assessment_id, factors),
            "recommendation": self.seal("risk_assessments", "recommendation_ct", assessment_id,
                                        rng.choice(RECOMMENDATIONS))})

    # -- closing the case's rows ----------------------------------------------
    def finish(self) -> None:
        rng = self.rng
        case = self.case
        # The terminal event is the last one the workflow wrote.
        end = self.now if self.status in OPEN else self.events[-1][0]
        first = self.assignments[0][0] if self.assignments else None
        # Measure steps, reports and late incidents that happened before the end.
        for when, kind, extra, payload in sorted(self.side, key=lambda item: item[0]):
            happened = first is not None and first <= when <= end
            if kind in ("active", "withdraw"):
                if happened:
                    self.apply_side_measure(when, kind, payload)
            elif happened:
                if kind == "incident_added":
                    self.rows[Incident].append(extra)
                self.event(when, kind, self.assignee_at(when), **payload)
        # Notes and messages along the way.
        if first is not None:
            for _ in range(self.pick((0, 1, 2), (55, 35, 10))):
                when = rng.uniform(first, end)
                note_id = new_row_id()
                author = self.assignee_at(when)
                self.rows[Note].append({"id": note_id, "case_id": self.case_id, "author_id": author,
                                        "created_at": when,
                                        "body": self.seal("case_notes", "body_ct", note_id, rng.choice(NOTES))})
                self.event(when, "note_added", author, note=note_id)
            if self.petitioner:
                when = first
                for i in range(rng.randint(1, 4)):
                    when += self.hours(20, 1.2)
                    if when > end:
                        break
                    out = i % 2 == 0
                    message_id = new_row_id()
                    author = self.assignee_at(when) if out else self.petitioner
                    read = when + self.hours(5, 1.2)
                    self.rows[Message].append({
                        "id": message_id, "case_id": self.case_id, "author_id": author, "to_petitioner": out,
                        "created_at": when, "read_at": read if read <= self.now and rng.random() < 0.85 else None,
                        "body": self.seal("case_messages", "body_ct", message_id,
                                          rng.choice(MESSAGES_OUT if out else MESSAGES_IN))})
                    self.event(when, "message_sent", author, message=message_id, to_petitioner=out)
        self.events.sort(key=itemgetter(0, 1))
        case_id = self.case_id
        add = self.rows[CaseEvent].append
        for at, _, kind, actor, data in self.events:
            add({"case_id": case_id, "kind": kind, "at": at, "actor_id": actor, "data": data})
        case["status"] = self.status
        case["assignee_id"] = self.assignee
        case["updated_at"] = self.events[-1][0]
        case["version"] = 1 + self.transitions


def _in_memory(engine) -> bool:
    return engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:")


def generate_cases(session: Session, n: int, *, seed: int | None = None, now: datetime | None = None,
                   batch: int = 5000, progress: Callable[[int, int, float], None] | None = None,
                   check_foreign_keys: bool = False) -> int:
    """Write ``n`` synthetic cases with their timelines; returns how many were written.

    Creates the demo pool accounts first if missing (``ensure_pools``). Every
    call adds ``n`` more cases. One transaction per ``batch`` cases. With more
    than one batch (SQLite file or PostgreSQL), a writer process of its own
    writes each batch while the next is made. ``progress(done, n, seconds)``
    as batches are made, and once all are written. On PostgreSQL, as a
    superuser, the per-row foreign-key triggers are skipped for these
    transactions unless ``check_foreign_keys``. Needs an app context (the keyring).
    """
    if n <= 0:
        return 0
    started = time.perf_counter()
    pools = ensure_pools(session)
    rng = random.Random(seed)
    gen = _Generator(session, pools, rng, now or utcnow(), n)
    engine = session.get_bind()
    dialect = engine.dialect.name
    skip_fk = not check_foreign_keys and _may_skip_fk_triggers(session.connection())
    session.commit()
    writer = _Writer(dialect)
    separate = n > batch and dialect in ("sqlite", "postgresql") and not _in_memory(engine)
    process = _WriterProcess(engine, skip_fk) if separate else None
    done = 0
    try:
        while done < n:
            size = min(batch, n - done)
            rows = _Batch()
            for _ in range(size):
                gen.case_rows(rows)
            if dialect not in ("sqlite", "postgresql"):
                for model in TABLES:
                    _core_insert(session, model.__table__, rows.rows[model])
            elif process:
                process.put(writer.statements(rows))
            else:
                _execute(session.connection().connection.driver_connection, dialect,
                         writer.statements(rows), skip_fk)
            session.commit()
            done += size
            if progress and done < n:
                progress(done, n, time.perf_counter() - started)
    except BaseException:
        if process:
            process.close(failed=True)
        raise
    if process:
        process.close()
    if progress:
        progress(n, n, time.perf_counter() - started)
    audit.record(session, "demo.cases_generated", count=n)
    editions.raise_edition(session)  # written past the ORM: lists rendered before are stale
    session.commit()
    return n


def _core_insert(session: Session, table, rows: list[dict]) -> None:
    """Other engines: a plain Core insert (rows hold POSIX timestamps)."""
    if rows:
        stamps = [c.name for c in table.columns if isinstance(c.type, UTCDateTime)]
        session.execute(insert(table), [
            {**row, **{k: _utc(row[k]) for k in stamps if row.get(k) is not None}} for row in rows])


def count_cases(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Case)).scalar_one()


__all__ = ["generate_cases", "ensure_pools", "pool_logins", "count_cases", "POOL_PASSWORD",
           "CASEWORKERS", "SUPERVISORS", "JOURNALISTS"]
