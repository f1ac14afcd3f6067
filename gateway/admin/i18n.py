"""English and French for the admin and chat pages; the French follows the seed's wording.

The language is the `lang` cookie set by the toggle (`?lang=fr`), else the best of Accept-Language,
else English. A missing French text falls back to the English one.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

LANGUAGES = ("en", "fr")
DEFAULT = "en"
COOKIE = "ckg_lang"

EN = {
    "nav.label": "Sections",
    "nav.workflows": "Hosted workflows",
    "nav.telephony": "Telephony routes",
    "nav.sessions": "Sessions",
    "nav.keys": "API keys",
    "nav.audit": "Audit",
    "nav.status": "Status",
    "nav.chat": "Chat",
    "nav.logout": "Log out",

    "login.title": "Sign in",
    "login.intro": "Sign in with an admin API key (gk_…).",
    "login.no_auth": "API keys are not enabled: add the auth plugin to `plugins:` in config.yaml.",
    "login.key": "Admin API key",
    "login.submit": "Sign in",
    "login.headers": "Behind nginx, a trusted X-Forwarded-User (with an admin group) signs you in without a key.",
    "login.invalid": "This key is not valid, or it has been revoked.",
    "login.rate_limited": "Too many failed attempts from your address; try again in {seconds} s.",

    "form.optional": "optional",
    "form.fix_errors": "Please correct the fields marked below.",

    "workflows.title": "Hosted workflows",
    "workflows.add": "Add",
    "workflows.add_title": "Add a hosted workflow",
    "workflows.intro": "Workflows published in Agent Builder, by slug. Front ends ask for a session by slug; "
                       "a request without one gets the Start workflow, else the first managed one.",
    "workflows.source": "Source",
    "workflows.availability": "Availability",
    "workflows.actions": "Actions",
    "workflows.start": "Start",
    "workflows.start_hint": "Sessions requested without a slug use this workflow.",
    "workflows.default": "default",
    "workflows.default_hint": "No Start workflow is set: sessions requested without a slug use this one.",
    "workflows.available": "Available",
    "workflows.unavailable": "Unavailable",
    "workflows.use_as_start": "Use as Start workflow",
    "workflows.read_only": "read-only",
    "workflows.read_only_hint": "Declared in config.yaml or CHATKIT_WORKFLOW_ID: change it there.",
    "workflows.none": "No hosted workflow yet.",
    "workflows.start_is": "Start workflow: {slug}",
    "workflows.start_missing": "no such workflow",
    "workflows.clear_start": "Return to config.yaml's Start",
    "workflows.shadowed": "Shadowed entries",
    "workflows.shadowed_intro": "These entries are not used: another source declares the same slug and wins.",
    "workflows.shadowed_by": "Shadowed by",

    "field.slug": "Slug",
    "field.label": "Label",
    "field.description": "Description",
    "field.workflow_id": "OpenAI workflow id",
    "field.version": "Version",
    "field.url": "ChatKit server URL",
    "field.number": "Number",
    "field.workflow": "Workflow",
    "hint.number": "e.g. +15551234567 for that number only, or +1555* for every number starting with +1555.",
    "hint.number_fixed": "A route's number cannot change: add the new one, then delete this one.",
    "hint.route_workflow": "The slug of the hosted workflow that answers, e.g. assistant-voix.",
    "hint.url": "Where your ChatKitServer answers, e.g. https://chatkit.internal/chatkit",
    "workflows.server": "server",
    "workflows.server_hint": "Served by your own ChatKit server: front ends get api.url instead of a client secret.",
    "hint.slug": "e.g. assistant-voix: a-z, 0-9, '_' and '-', up to 63 characters.",
    "hint.slug_fixed": "A slug cannot change: add the new one, then delete this one.",
    "hint.workflow_id": "The id of the published workflow: wf_…",
    "hint.label": "Helps agents recognise it; defaults to the slug.",
    "hint.version": "A pinned version number; empty for the published one.",
    "hint.description": "Helps agents recognise it.",
    "hint.key_name": "Who or what uses this key, e.g. support-frontend.",

    "source.managed": "managed",
    "source.config": "config",
    "source.legacy": "legacy",

    "action.edit": "Edit",
    "action.delete": "Delete",
    "action.save": "Save",
    "action.cancel": "Cancel",
    "edit.title": "Edit {slug}",
    "delete.title": "Delete {slug}?",
    "delete.question": "Delete the hosted workflow “{label}” ({slug})? Front ends asking for this slug will get "
                       "hosted_workflow_not_found.",
    "delete.is_start": "It is the Start workflow: sessions without a slug will fall back to the next default.",
    "delete.irreversible": "This cannot be undone.",
    "delete.confirm": "Delete",

    "telephony.title": "Telephony routes",
    "telephony.add": "Add",
    "telephony.add_title": "Add a telephony route",
    "telephony.intro": "Which hosted workflow answers an incoming call, by the number called: the exact number "
                       "first, then the longest matching prefix, then the default workflow.",
    "telephony.exact": "exact number",
    "telephony.prefix": "prefix",
    "telephony.resolves": "exists",
    "telephony.missing": "no such workflow",
    "telephony.missing_hint": "Calls to this route are rejected (SIP {status}) until a workflow has this slug.",
    "telephony.read_only_hint": "Declared in config.yaml (telephony.routes): change it there.",
    "telephony.none": "No telephony route yet.",
    "telephony.default": "Default workflow",
    "telephony.no_default": "none",
    "telephony.default_hint": "Answers calls no route matches: TELEPHONY_DEFAULT_WORKFLOW_SLUG, or "
                              "telephony.default_workflow in config.yaml.",
    "telephony.reject": "Reject status",
    "telephony.reject_hint": "The SIP status of a call nothing answers, or whose workflow does not exist "
                             "(telephony.reject_status).",
    "telephony.shadowed_intro": "These routes are not used: a managed route has the same number and wins.",
    "telephony.edit_title": "Edit the route {number}",
    "telephony.delete_title": "Delete the route {number}?",
    "telephony.delete_question": "Delete the route {number}, answered by {slug}?",
    "telephony.delete_then_default": "Its calls will then follow the next matching route, else the default "
                                     "workflow {slug}.",
    "telephony.delete_then_reject": "Its calls will then follow the next matching route, else be rejected "
                                    "(SIP {status}).",

    "sessions.title": "Sessions",
    "sessions.intro": "ChatKit sessions issued by this gateway that have not expired, newest first.",
    "sessions.id": "Session",
    "sessions.principal": "Principal",
    "sessions.created": "Created",
    "sessions.expires": "Expires",
    "sessions.status": "Status",
    "sessions.cancel": "Cancel",
    "sessions.confirm_cancel": "Cancel this session? Its client secret stops working at once.",
    "sessions.none": "No live session.",
    "status.active": "active",
    "status.cancelled": "cancelled",
    "status.expired": "expired",

    "keys.title": "API keys",
    "keys.created": "Key “{name}” created",
    "keys.shown_once": "Copy it now: it is shown only this once, and only its prefix is kept.",
    "keys.no_auth": "API keys are not enabled: add the auth plugin to `plugins:` in config.yaml.",
    "keys.name": "Name",
    "keys.prefix": "Prefix",
    "keys.role": "Role",
    "keys.created_at": "Created",
    "keys.admin": "admin",
    "keys.user": "user",
    "keys.revoked": "revoked {when}",
    "keys.revoke": "Revoke",
    "keys.confirm_revoke": "Revoke the key “{name}”? Anything using it is refused at once.",
    "keys.none": "No API key yet.",
    "keys.create_title": "Create a key",
    "keys.make_admin": "Admin (may manage workflows, keys and sessions)",
    "keys.create": "Create",

    "audit.title": "Audit",
    "audit.actor": "Actor",
    "audit.object": "Object",
    "audit.filter": "Filter",
    "audit.clear": "Show all",
    "audit.when": "When",
    "audit.action": "Action",
    "audit.change": "Change",
    "audit.none": "Nothing recorded.",

    "status.title": "Status",
    "status.upstream": "Upstream",
    "status.check": "Check",
    "status.via": "Route",
    "status.outcome": "Outcome",
    "status.in_ms": "in {ms} ms",
    "status.detail": "Detail",
    "status.key": "Server API key",
    "status.key_set": "set",
    "status.key_missing": "not set",
    "status.last_hour": "Last hour",
    "status.config": "Effective configuration",
    "status.config_intro": "Defaults, config.yaml and the environment merged; secrets are masked.",
    "chart.rps": "Requests per second",
    "chart.latency": "Latency, ms (a stream: its first byte)",
    "chart.errors": "Errors per workflow, per minute",
    "chart.no_data": "no traffic",
    "chart.no_errors": "no errors",
    "chart.no_workflow": "(no workflow)",
    "chart.ago": "−{minutes} min",
    "chart.now": "now",

    "chat.title": "Chat",
    "chat.not_configured": "No hosted workflow is configured: hosted mode is turned off.",
    "chat.not_found": "The requested hosted workflow was not found: hosted mode is turned off.",
    "chat.failed": "The chat session could not be started.",
    "chat.loading": "Starting a chat session…",
    "chat.needs_js": "The ChatKit chat needs JavaScript.",

    "flash.workflow_created": "Workflow {slug} added.",
    "flash.workflow_updated": "Workflow {slug} saved.",
    "flash.workflow_deleted": "Workflow {slug} deleted.",
    "flash.start_set": "{slug} is now the Start workflow.",
    "flash.start_cleared": "The Start workflow is config.yaml's again.",
    "flash.session_cancelled": "Session {id} cancelled.",
    "flash.key_revoked": "Key {name} revoked.",
    "flash.route_created": "Route {number} added.",
    "flash.route_updated": "Route {number} saved.",
    "flash.route_deleted": "Route {number} deleted.",

    "page.forbidden": "Forbidden",
    "page.forbidden_text": "This page is for administrators. You are signed in as {name}, who is not one.",
    "page.csrf": "Form expired",
    "page.csrf_text": "The form was missing its security token, or it has expired. Go back, reload the page and "
                      "try again.",
    "page.not_found": "Not found",
    "page.not_found_text": "There is nothing here.",
    "page.error": "Something went wrong",
    "page.error_text": "The gateway could not do this.",
    "page.back": "Back to the admin pages",
    "page.sign_in_again": "Sign in with another key",

    "error.invalid_slug": "Not a slug: 1 to 63 characters among a-z, 0-9, '_' and '-', starting with a letter "
                          "or a digit.",
    "error.invalid_workflow_id": "Expected wf_ followed by letters and digits.",
    "error.hosted_workflow_conflict": "This slug is already taken ({source}).",
    "error.required": "Required.",
    "error.key_name_taken": "A key with this name already exists.",
    "error.invalid_number": "Not a number: + and digits (+15551234567), or a prefix ending in * (+1555*).",
    "error.telephony_route_conflict": "This number already has a route ({source}).",
    "error.hosted_workflow_not_found": "No hosted workflow has this slug.",
}

FR = {
    "nav.label": "Rubriques",
    "nav.workflows": "Workflows hébergés",
    "nav.telephony": "Routes téléphoniques",
    "nav.sessions": "Sessions",
    "nav.keys": "Clés API",
    "nav.audit": "Journal",
    "nav.status": "État",
    "nav.chat": "Chat",
    "nav.logout": "Se déconnecter",

    "login.title": "Connexion",
    "login.intro": "Connectez-vous avec une clé API d'administration (gk_…).",
    "login.no_auth": "Les clés API ne sont pas activées : ajoutez le plugin auth à `plugins:` dans config.yaml.",
    "login.key": "Clé API d'administration",
    "login.submit": "Se connecter",
    "login.headers": "Derrière nginx, un X-Forwarded-User de confiance (d'un groupe admin) vous connecte sans clé.",
    "login.invalid": "Cette clé n'est pas valide, ou elle a été révoquée.",
    "login.rate_limited": "Trop d'échecs depuis votre adresse ; réessayez dans {seconds} s.",

    "form.optional": "facultatif",
    "form.fix_errors": "Corrigez les champs signalés ci-dessous.",

    "workflows.title": "Workflows hébergés",
    "workflows.add": "Ajouter",
    "workflows.add_title": "Ajouter un workflow hébergé",
    "workflows.intro": "Les workflows publiés dans Agent Builder, par slug. Le frontend demande une session par "
                       "slug ; sans slug, le backend utilise le workflow de l'étape Start, sinon le premier "
                       "workflow géré.",
    "workflows.source": "Source",
    "workflows.availability": "Disponibilité",
    "workflows.actions": "Actions",
    "workflows.start": "Start",
    "workflows.start_hint": "Les sessions demandées sans slug utilisent ce workflow.",
    "workflows.default": "par défaut",
    "workflows.default_hint": "Aucun workflow Start : les sessions demandées sans slug utilisent celui-ci.",
    "workflows.available": "Disponible",
    "workflows.unavailable": "Indisponible",
    "workflows.use_as_start": "Utiliser dans l'étape Start",
    "workflows.read_only": "lecture seule",
    "workflows.read_only_hint": "Déclaré dans config.yaml ou CHATKIT_WORKFLOW_ID : modifiez-le là.",
    "workflows.none": "Aucun workflow hébergé pour l'instant.",
    "workflows.start_is": "Workflow de l'étape Start : {slug}",
    "workflows.start_missing": "workflow inexistant",
    "workflows.clear_start": "Revenir au Start de config.yaml",
    "workflows.shadowed": "Entrées masquées",
    "workflows.shadowed_intro": "Ces entrées ne sont pas utilisées : une autre source déclare le même slug et "
                                "l'emporte.",
    "workflows.shadowed_by": "Masquée par",

    "field.slug": "Slug",
    "field.label": "Libellé",
    "field.description": "Description",
    "field.workflow_id": "Identifiant du workflow OpenAI",
    "field.version": "Version",
    "field.url": "URL du serveur ChatKit",
    "field.number": "Numéro",
    "field.workflow": "Workflow",
    "hint.number": "ex : +33123456789 pour ce seul numéro, ou +3361* pour tous ceux qui commencent par +3361.",
    "hint.number_fixed": "Le numéro d'une route ne change pas : ajoutez la nouvelle, puis supprimez celle-ci.",
    "hint.route_workflow": "Le slug du workflow hébergé qui répond, ex : assistant-voix.",
    "hint.url": "L'adresse où répond votre ChatKitServer, ex : https://chatkit.interne/chatkit",
    "workflows.server": "serveur",
    "workflows.server_hint": "Servi par votre propre serveur ChatKit : le frontend reçoit api.url au lieu d'un "
                             "client secret.",
    "hint.slug": "ex : assistant-voix ; a-z, 0-9, « _ » et « - », 63 caractères au plus.",
    "hint.slug_fixed": "Un slug ne change pas : ajoutez le nouveau, puis supprimez celui-ci.",
    "hint.workflow_id": "L'identifiant du workflow publié : wf_…",
    "hint.label": "Aide les agents à le reconnaître ; par défaut, le slug.",
    "hint.version": "Un numéro de version figé ; vide pour la version publiée.",
    "hint.description": "Aide les agents à le reconnaître.",
    "hint.key_name": "Qui ou quoi utilise cette clé, ex : frontend-support.",

    "source.managed": "géré",
    "source.config": "config",
    "source.legacy": "hérité",

    "action.edit": "Modifier",
    "action.delete": "Supprimer",
    "action.save": "Enregistrer",
    "action.cancel": "Annuler",
    "edit.title": "Modifier {slug}",
    "delete.title": "Supprimer {slug} ?",
    "delete.question": "Supprimer le workflow hébergé « {label} » ({slug}) ? Un frontend qui demande ce slug "
                       "recevra hosted_workflow_not_found.",
    "delete.is_start": "C'est le workflow de l'étape Start : les sessions sans slug utiliseront le suivant.",
    "delete.irreversible": "Cette action est définitive.",
    "delete.confirm": "Supprimer",

    "telephony.title": "Routes téléphoniques",
    "telephony.add": "Ajouter",
    "telephony.add_title": "Ajouter une route téléphonique",
    "telephony.intro": "Le workflow hébergé qui répond à un appel entrant, selon le numéro appelé : le numéro "
                       "exact d'abord, puis le plus long préfixe correspondant, puis le workflow par défaut.",
    "telephony.exact": "numéro exact",
    "telephony.prefix": "préfixe",
    "telephony.resolves": "existe",
    "telephony.missing": "workflow inexistant",
    "telephony.missing_hint": "Les appels de cette route sont rejetés (SIP {status}) tant qu'aucun workflow n'a "
                              "ce slug.",
    "telephony.read_only_hint": "Déclarée dans config.yaml (telephony.routes) : modifiez-la là.",
    "telephony.none": "Aucune route téléphonique pour l'instant.",
    "telephony.default": "Workflow par défaut",
    "telephony.no_default": "aucun",
    "telephony.default_hint": "Répond aux appels qu'aucune route ne prend : TELEPHONY_DEFAULT_WORKFLOW_SLUG, ou "
                              "telephony.default_workflow dans config.yaml.",
    "telephony.reject": "Statut de rejet",
    "telephony.reject_hint": "Le statut SIP d'un appel auquel rien ne répond, ou dont le workflow n'existe pas "
                             "(telephony.reject_status).",
    "telephony.shadowed_intro": "Ces routes ne sont pas utilisées : une route gérée a le même numéro et "
                                "l'emporte.",
    "telephony.edit_title": "Modifier la route {number}",
    "telephony.delete_title": "Supprimer la route {number} ?",
    "telephony.delete_question": "Supprimer la route {number}, à laquelle répond {slug} ?",
    "telephony.delete_then_default": "Ses appels suivront alors la route correspondante suivante, sinon le "
                                     "workflow par défaut {slug}.",
    "telephony.delete_then_reject": "Ses appels suivront alors la route correspondante suivante, sinon seront "
                                    "rejetés (SIP {status}).",

    "sessions.title": "Sessions",
    "sessions.intro": "Les sessions ChatKit émises par cette passerelle et non expirées, les plus récentes d'abord.",
    "sessions.id": "Session",
    "sessions.principal": "Utilisateur",
    "sessions.created": "Créée",
    "sessions.expires": "Expire",
    "sessions.status": "État",
    "sessions.cancel": "Annuler",
    "sessions.confirm_cancel": "Annuler cette session ? Son client secret cesse aussitôt de fonctionner.",
    "sessions.none": "Aucune session en cours.",
    "status.active": "active",
    "status.cancelled": "annulée",
    "status.expired": "expirée",

    "keys.title": "Clés API",
    "keys.created": "Clé « {name} » créée",
    "keys.shown_once": "Copiez-la maintenant : elle n'est affichée qu'une fois, seul son préfixe est conservé.",
    "keys.no_auth": "Les clés API ne sont pas activées : ajoutez le plugin auth à `plugins:` dans config.yaml.",
    "keys.name": "Nom",
    "keys.prefix": "Préfixe",
    "keys.role": "Rôle",
    "keys.created_at": "Créée",
    "keys.admin": "admin",
    "keys.user": "utilisateur",
    "keys.revoked": "révoquée {when}",
    "keys.revoke": "Révoquer",
    "keys.confirm_revoke": "Révoquer la clé « {name} » ? Tout ce qui l'utilise est refusé aussitôt.",
    "keys.none": "Aucune clé API pour l'instant.",
    "keys.create_title": "Créer une clé",
    "keys.make_admin": "Admin (gère les workflows, les clés et les sessions)",
    "keys.create": "Créer",

    "audit.title": "Journal",
    "audit.actor": "Auteur",
    "audit.object": "Objet",
    "audit.filter": "Filtrer",
    "audit.clear": "Tout afficher",
    "audit.when": "Date",
    "audit.action": "Action",
    "audit.change": "Modification",
    "audit.none": "Rien d'enregistré.",

    "status.title": "État",
    "status.upstream": "API en amont",
    "status.check": "Vérification",
    "status.via": "Chemin",
    "status.outcome": "Résultat",
    "status.in_ms": "en {ms} ms",
    "status.detail": "Détail",
    "status.key": "Clé API du serveur",
    "status.key_set": "définie",
    "status.key_missing": "non définie",
    "status.last_hour": "Dernière heure",
    "status.config": "Configuration effective",
    "status.config_intro": "Valeurs par défaut, config.yaml et environnement fusionnés ; les secrets sont masqués.",
    "chart.rps": "Requêtes par seconde",
    "chart.latency": "Latence, ms (un flux : son premier octet)",
    "chart.errors": "Erreurs par workflow, par minute",
    "chart.no_data": "aucun trafic",
    "chart.no_errors": "aucune erreur",
    "chart.no_workflow": "(sans workflow)",
    "chart.ago": "−{minutes} min",
    "chart.now": "maintenant",

    "chat.title": "Chat",
    "chat.not_configured": "Aucun workflow hébergé n'est configuré : le mode hébergé est désactivé.",
    "chat.not_found": "Le workflow hébergé demandé est introuvable : le mode hébergé est désactivé.",
    "chat.failed": "La session de chat n'a pas pu démarrer.",
    "chat.loading": "Ouverture d'une session de chat…",
    "chat.needs_js": "Le chat ChatKit nécessite JavaScript.",

    "flash.workflow_created": "Workflow {slug} ajouté.",
    "flash.workflow_updated": "Workflow {slug} enregistré.",
    "flash.workflow_deleted": "Workflow {slug} supprimé.",
    "flash.start_set": "{slug} est désormais le workflow de l'étape Start.",
    "flash.start_cleared": "Le workflow Start est de nouveau celui de config.yaml.",
    "flash.session_cancelled": "Session {id} annulée.",
    "flash.key_revoked": "Clé {name} révoquée.",
    "flash.route_created": "Route {number} ajoutée.",
    "flash.route_updated": "Route {number} enregistrée.",
    "flash.route_deleted": "Route {number} supprimée.",

    "page.forbidden": "Accès refusé",
    "page.forbidden_text": "Cette page est réservée aux administrateurs. Vous êtes connecté en tant que {name}, "
                           "qui n'en est pas un.",
    "page.csrf": "Formulaire expiré",
    "page.csrf_text": "Le formulaire n'avait pas son jeton de sécurité, ou celui-ci a expiré. Revenez en arrière, "
                      "rechargez la page et recommencez.",
    "page.not_found": "Introuvable",
    "page.not_found_text": "Il n'y a rien ici.",
    "page.error": "Une erreur est survenue",
    "page.error_text": "La passerelle n'a pas pu faire cela.",
    "page.back": "Retour à l'administration",
    "page.sign_in_again": "Se connecter avec une autre clé",

    "error.invalid_slug": "Ce n'est pas un slug : 1 à 63 caractères parmi a-z, 0-9, « _ » et « - », commençant "
                          "par une lettre ou un chiffre.",
    "error.invalid_workflow_id": "Attendu : wf_ suivi de lettres et de chiffres.",
    "error.hosted_workflow_conflict": "Ce slug est déjà pris ({source}).",
    "error.required": "Obligatoire.",
    "error.key_name_taken": "Une clé porte déjà ce nom.",
    "error.invalid_number": "Ce n'est pas un numéro : + et des chiffres (+33123456789), ou un préfixe finissant "
                            "par * (+3361*).",
    "error.telephony_route_conflict": "Ce numéro a déjà une route ({source}).",
    "error.hosted_workflow_not_found": "Aucun workflow hébergé n'a ce slug.",
}

CATALOGS = {"en": EN, "fr": FR}

Translator = Callable[..., str]


def translator(lang: str) -> Translator:
    catalog = CATALOGS.get(lang, EN)

    def t(key: str, **values: object) -> str:
        text = catalog.get(key) or EN.get(key) or key
        return text.format(**values) if values else text

    return t


def accepted(header: str) -> str | None:
    """The first of our languages in an Accept-Language header, by its q-value."""
    choices = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and q > 0:
            choices.append((-q, position, primary))
    return min(choices)[2] if choices else None


def choose(request: web.Request) -> str:
    """The toggle's choice (this request's ?lang=, then the cookie), else Accept-Language, else English."""
    for chosen in (request.query.get("lang"), request.cookies.get(COOKIE)):
        if chosen in LANGUAGES:
            return chosen
    return accepted(request.headers.get("Accept-Language", "")) or DEFAULT
