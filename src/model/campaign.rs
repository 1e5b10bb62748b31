//! Campaigns and the customers they reach: the definition as stored, one batch of its
//! audience, the delivery of one customer on one channel, and the receipt that confirms it.

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use std::collections::BTreeMap;

use crate::schema::{from_json, MAX_ADDRESS_LEN};

use super::{CampaignId, Channel, CustomerId, HtmlTemplate, Language, Message, Template, Topic};
/// A point on Earth, validated on the way in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Location {
    /// Within ±85.05112878: where Redis' geo index ends (Web Mercator), not the pole.
    #[schema(minimum = -85.05112878, maximum = 85.05112878)]
    pub lat: f64,
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub lon: f64,
}

impl Location {
    /// Redis' GEOADD refuses latitudes beyond this (a customer stored at 89° failed with 503).
    pub const MAX_LAT: f64 = 85.05112878;

    /// The coordinate that is off the Earth (the bounds the schema above states), and why.
    pub fn invalid_part(&self) -> Option<(&'static str, &'static str)> {
        if !(self.lat.is_finite() && (-Self::MAX_LAT..=Self::MAX_LAT).contains(&self.lat)) {
            Some((
                "lat",
                "lat must be within -85.05112878..85.05112878 (Redis' geo index)",
            ))
        } else if !(self.lon.is_finite() && (-180.0..=180.0).contains(&self.lon)) {
            Some(("lon", "lon must be within -180..180"))
        } else {
            None
        }
    }
}

/// What Herald knows of a customer: where each channel reaches them, what they agreed to,
/// and what a template may mention. Consent is opt-in: a channel without `true` is unused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::schema::optional_name)]
    pub name: Option<String>,
    /// Address per channel: e-mail address, phone number (SMS), WhatsApp number, push token.
    #[serde(default)]
    #[schema(schema_with = contacts_schema)]
    pub contacts: std::collections::BTreeMap<Channel, String>,
    #[serde(default)]
    #[schema(schema_with = consent_schema)]
    pub consent: std::collections::BTreeMap<Channel, bool>,
    /// IANA name, e.g. `Europe/Madrid`; quiet hours are read in it.
    #[serde(default = "default_time_zone")]
    #[schema(schema_with = time_zone_schema)]
    pub time_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Free-form values a campaign template can mention as `{{key}}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schema(schema_with = attributes_schema)]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The language messages are written in for this customer, when the campaign has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
}

impl Customer {
    pub const MAX_ATTRIBUTES: usize = 64;
    pub const MAX_ATTRIBUTE_NAME_LEN: usize = 64;
    pub const MAX_ATTRIBUTE_LEN: usize = 1024;

    /// Whether the attributes keep within the bounds (the schema states the same).
    pub fn attributes_fit(&self) -> bool {
        self.attributes.len() <= Self::MAX_ATTRIBUTES
            && self.attributes.iter().all(|(name, value)| {
                !name.is_empty()
                    && name.len() <= Self::MAX_ATTRIBUTE_NAME_LEN
                    && value.len() <= Self::MAX_ATTRIBUTE_LEN
            })
    }
}

fn contacts_schema() -> utoipa::openapi::schema::Schema {
    Channel::map_schema(json!({
        "type": "string", "minLength": 1, "maxLength": MAX_ADDRESS_LEN, "pattern": "\\S",
        "description": "E-mail address, phone number (SMS, WhatsApp) or push token",
    }))
}

fn consent_schema() -> utoipa::openapi::schema::Schema {
    Channel::map_schema(json!({"type": "boolean"}))
}

fn attributes_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": "object",
        "maxProperties": Customer::MAX_ATTRIBUTES,
        "propertyNames": {"type": "string", "minLength": 1, "maxLength": Customer::MAX_ATTRIBUTE_NAME_LEN},
        "additionalProperties": {"type": "string", "maxLength": Customer::MAX_ATTRIBUTE_LEN},
    }))
}

/// Every name of the time-zone database Herald carries, spelled as the database spells it.
fn time_zone_names() -> &'static std::collections::BTreeSet<String> {
    static NAMES: std::sync::LazyLock<std::collections::BTreeSet<String>> =
        std::sync::LazyLock::new(|| {
            jiff::tz::db()
                .available()
                .map(|name| name.to_string())
                .collect()
        });
    &NAMES
}

/// Whether `zone` is an IANA time zone Herald can read quiet hours in. Exact spelling: the
/// document lists these names, so `europe/madrid` (which the database would also find) is
/// refused as the document says.
pub fn is_known_time_zone(zone: &str) -> bool {
    time_zone_names().contains(zone)
}

/// The document states exactly what `PUT /v1/customers/{id}` accepts: a pattern of every
/// name (not an `enum`: client generators turn `GMT+0` and `GMT-0` into one constant).
fn time_zone_schema() -> utoipa::openapi::schema::Schema {
    let names: Vec<String> = time_zone_names()
        .iter()
        .map(|name| name.replace('+', "\\+"))
        .collect();
    let pattern = format!("^({})$", names.join("|"));
    crate::schema::from_json(serde_json::json!({
        "type": "string", "pattern": pattern,
        "description": "An IANA time-zone name as the database spells it, e.g. Europe/Madrid",
    }))
}

fn default_time_zone() -> String {
    "UTC".into()
}

impl Customer {
    /// The address to use on `channel`, if the customer has one and agreed to it.
    pub fn reachable_on(&self, channel: Channel) -> Option<&str> {
        let consented = self.consent.get(&channel).copied().unwrap_or(false);
        self.contacts
            .get(&channel)
            .map(String::as_str)
            .filter(|a| consented && !a.trim().is_empty())
    }

    /// What a template sees: the customer's attributes, then the built-in names (which win).
    pub fn template_context(&self, id: &CustomerId) -> minijinja::Value {
        use minijinja::Value;
        let mut values: BTreeMap<Value, Value> = self
            .attributes
            .iter()
            .map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str())))
            .collect();
        let mut set = |k: &str, v: &str| values.insert(Value::from(k), Value::from(v));
        set("id", id.as_str());
        set("customer_id", id.as_str());
        set("name", self.name.as_deref().unwrap_or(""));
        if let Some(language) = &self.language {
            set("language", language.as_str());
        }
        Value::from(values)
    }
}

/// A campaign as stored: what to say, on which channels in which order, how long to wait
/// for each channel's confirmation, and to whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub name: String,
    /// The message body on every channel (the plain-text part of an e-mail).
    pub template: Template,
    /// Subject, HTML part and sender of the e-mails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailTemplate>,
    /// The approved WhatsApp template that carries the message on the WhatsApp Cloud API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappCampaignTemplate>,
    /// The same message in other languages, chosen by the customer's `language`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translations: BTreeMap<Language, Translation>,
    /// Preferred order; empty means the rules' default order.
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// How long to wait for a receipt on each channel before falling back; channels not
    /// listed use the rules' default.
    #[serde(default)]
    pub confirmation_timeout_ms: std::collections::BTreeMap<Channel, u64>,
    /// The most one message may cost; dearer channels are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
    /// What it is about: customers choose per topic and channel, and caps may count per
    /// topic. Campaigns stored before topics existed are `offers`.
    #[serde(default = "Topic::offers")]
    pub topic: Topic,
    pub recipients: u64,
    pub created_ms: u64,
    /// When fan-out starts (ms since the epoch): a campaign created earlier waits, scheduled,
    /// until `herald-retry` starts it. Absent: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at_ms: Option<u64>,
    /// After this (ms since the epoch) nothing of the campaign is sent, fallbacks included:
    /// what is not sent by then ends `expired`. A flash promo's campaign expires when the
    /// promo ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// What an e-mail adds to the body: a subject, an HTML part, a sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailTemplate {
    pub subject: Template,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<HtmlTemplate>,
    /// `Name <address>` or an address; the dispatcher's default sender when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = sender_schema)]
    pub from: Option<String>,
}

fn sender_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": ["string", "null"], "maxLength": MAX_ADDRESS_LEN,
        "description": "Name <address> or an address",
    }))
}

/// A WhatsApp message template approved in Meta's manager: its name, the language to use
/// when the customer's profile has none, and its body parameters (templates themselves,
/// rendered per customer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatsappCampaignTemplate {
    /// An approved template in Meta's manager.
    #[schema(schema_with = whatsapp_name_schema)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    #[serde(default)]
    #[schema(schema_with = whatsapp_parameters_schema)]
    pub parameters: Vec<Template>,
}

impl WhatsappCampaignTemplate {
    pub const MAX_NAME_LEN: usize = 512;
    pub const MAX_PARAMETERS: usize = 20;

    /// A template name as Meta's manager writes it: lower-case letters, digits and '_'.
    pub fn name_is_valid(&self) -> bool {
        !self.name.is_empty()
            && self.name.len() <= Self::MAX_NAME_LEN
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    }
}

fn whatsapp_name_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": "string",
        "pattern": format!("^[a-z0-9_]{{1,{}}}$", WhatsappCampaignTemplate::MAX_NAME_LEN),
        "description": "An approved template in Meta's manager",
    }))
}

fn whatsapp_parameters_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({
        "type": "array",
        "maxItems": WhatsappCampaignTemplate::MAX_PARAMETERS,
        "items": {"$ref": "#/components/schemas/Template"},
    }))
}

/// A WhatsApp template as one customer gets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhatsappTemplate {
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub parameters: Vec<String>,
}

/// A campaign's message in one more language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Translation {
    pub template: Template,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailTemplate>,
}

impl Campaign {
    /// The body and e-mail parts in the customer's language: an exact translation, else
    /// one for the language's primary part (`es` for `es-mx`), else the campaign's own.
    pub fn in_language(&self, language: Option<&Language>) -> (&Template, Option<&EmailTemplate>) {
        let found = language.and_then(|l| {
            self.translations.get(l).or_else(|| {
                self.translations
                    .iter()
                    .find(|(k, _)| k.as_str() == l.primary())
                    .map(|(_, t)| t)
            })
        });
        match found {
            Some(t) => (&t.template, t.email.as_ref().or(self.email.as_ref())),
            None => (&self.template, self.email.as_ref()),
        }
    }

    /// Every template of the campaign with where it is, for checking them all at creation.
    pub fn templates(&self) -> Vec<(String, &Template)> {
        let mut all = vec![("template".to_string(), &self.template)];
        if let Some(e) = &self.email {
            e.templates("email", &mut all);
        }
        if let Some(w) = &self.whatsapp {
            for (i, p) in w.parameters.iter().enumerate() {
                all.push((format!("whatsapp.parameters[{i}]"), p));
            }
        }
        for (lang, t) in &self.translations {
            all.push((format!("translations.{lang}.template"), &t.template));
            if let Some(e) = &t.email {
                e.templates(&format!("translations.{lang}.email"), &mut all);
            }
        }
        all
    }
}

impl EmailTemplate {
    fn templates<'a>(&'a self, at: &str, into: &mut Vec<(String, &'a Template)>) {
        into.push((format!("{at}.subject"), &self.subject));
        if let Some(h) = &self.html {
            into.push((format!("{at}.html"), &h.0));
        }
    }
}

/// One batch of a campaign's audience, the unit of fan-out on `herald.campaigns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignBatch {
    pub campaign: CampaignId,
    pub batch: u32,
    /// A replay: fan out just these customers again (the batch number is then only a label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub customers: Vec<CustomerId>,
}

/// What the next owner of a slot does when the previous one died while the provider call
/// may have gone out (after the slot was marked `sending`, before it was marked `sent`):
/// nobody can know whether the customer got the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UncertainSend {
    /// At least once: send again with the same idempotency key (Message-ID). Right for
    /// transactional messages and for providers that drop a repeated key.
    #[default]
    Resend,
    /// At most once: mark the slot `uncertain`, count it and never send it again. Right for
    /// promotions, where a second copy is worse than a miss.
    Skip,
}

impl UncertainSend {
    pub fn as_str(self) -> &'static str {
        match self {
            UncertainSend::Resend => "resend",
            UncertainSend::Skip => "skip",
        }
    }
}

/// The work on a channel topic for one (campaign, customer) on one channel.
/// `attempt` counts channels tried: 0 is the first choice, 1 the first fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub campaign: CampaignId,
    pub customer: CustomerId,
    pub attempt: u32,
    #[serde(flatten)]
    pub message: Message,
    /// How long to wait for a receipt before the next channel is tried.
    pub timeout_ms: u64,
    /// When the campaign's fan-out published the first attempt, for latency figures.
    pub fanned_out_ms: u64,
    /// The channel's policy for a send a crash left uncertain (from the rules).
    #[serde(default)]
    pub on_uncertain: UncertainSend,
    /// What an e-mail carries besides the body (e-mail deliveries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailParts>,
    /// The WhatsApp template it goes as (WhatsApp deliveries of campaigns that name one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsappTemplate>,
}

/// A rendered e-mail's subject, HTML part and sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailParts {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl Delivery {
    /// The provider idempotency key: one (campaign, customer) on one channel. A fallback is
    /// another message on another channel, so it has its own key.
    pub fn idempotency_key(&self) -> String {
        delivery_key(&self.campaign, &self.customer, self.message.channel)
    }
}

pub fn delivery_key(campaign: &CampaignId, customer: &CustomerId, channel: Channel) -> String {
    format!("{campaign}:{customer}:{channel}")
}

/// Splits a delivery key back into its parts (receipts name deliveries by it).
pub fn parse_delivery_key(key: &str) -> Option<(CampaignId, CustomerId, Channel)> {
    let mut parts = key.split(':');
    let (c, u, ch) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((
        CampaignId::parse(c)?,
        CustomerId::parse(u)?,
        ch.parse().ok()?,
    ))
}

/// What the provider says happened to a delivery it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    Delivered,
    Failed,
}

/// A delivery receipt: what a provider posts to `POST /v1/receipts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Receipt {
    /// The idempotency key Herald sent with the message.
    #[schema(schema_with = receipt_key_schema)]
    pub key: String,
    pub status: ReceiptStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = receipt_reason_schema)]
    pub reason: Option<String>,
    /// The provider's id of the message (what it answered the send with): a receipt for
    /// another message than the one recorded is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = receipt_provider_id_schema)]
    pub provider_id: Option<String>,
}

impl Receipt {
    pub const MAX_KEY_LEN: usize = 256;
    pub const MAX_REASON_LEN: usize = 512;
    pub const MAX_PROVIDER_ID_LEN: usize = 128;

    /// The first field longer than it may be: receipts are stored and logged.
    pub fn oversized_field(&self) -> Option<&'static str> {
        let over = |s: &Option<String>, max: usize| s.as_ref().is_some_and(|s| s.len() > max);
        if self.key.len() > Self::MAX_KEY_LEN {
            Some("key")
        } else if over(&self.reason, Self::MAX_REASON_LEN) {
            Some("reason")
        } else if over(&self.provider_id, Self::MAX_PROVIDER_ID_LEN) {
            Some("provider_id")
        } else {
            None
        }
    }
}

fn receipt_key_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({"type": "string", "maxLength": Receipt::MAX_KEY_LEN}))
}

fn receipt_reason_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({"type": ["string", "null"], "maxLength": Receipt::MAX_REASON_LEN}))
}

fn receipt_provider_id_schema() -> utoipa::openapi::schema::Schema {
    from_json(json!({"type": ["string", "null"], "maxLength": Receipt::MAX_PROVIDER_ID_LEN}))
}
