//! Campaign templates in Jinja syntax (minijinja): compiled once when a campaign is read,
//! checked when it is created, rendered per customer. HTML templates escape what they insert.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};

/// The one template each compiled environment holds.
const NAME: &str = "t";

/// Instructions one rendering may run: generous for any message, small enough that a
/// template looping over itself cannot hold a fan-out worker.
const FUEL: u64 = 100_000;

/// What a template refers to that is not the customer's own attribute.
pub const BUILT_IN_VARIABLES: [&str; 4] = ["name", "id", "customer_id", "language"];

/// Where a template is wrong: its line (when known) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    pub line: Option<usize>,
    pub detail: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

impl From<minijinja::Error> for TemplateError {
    fn from(e: minijinja::Error) -> Self {
        let detail = match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        };
        TemplateError {
            line: e.line(),
            detail,
        }
    }
}

/// A compiled template; equal when the sources are.
#[derive(Clone)]
pub struct Template {
    source: Arc<str>,
    html: bool,
    env: Arc<Environment<'static>>,
}

impl Template {
    /// Longest template accepted, in bytes.
    pub const MAX_BYTES: usize = 16 * 1024;

    /// A plain-text template (message bodies, subjects): nothing is escaped.
    pub fn text(source: impl Into<String>) -> Result<Self, TemplateError> {
        Self::compile(source.into(), false)
    }

    /// An HTML template: every value it inserts is HTML-escaped.
    pub fn html(source: impl Into<String>) -> Result<Self, TemplateError> {
        Self::compile(source.into(), true)
    }

    fn compile(source: String, html: bool) -> Result<Self, TemplateError> {
        if source.len() > Self::MAX_BYTES {
            return Err(TemplateError {
                line: None,
                detail: format!("template is longer than {} bytes", Self::MAX_BYTES),
            });
        }
        let mut env = Environment::new();
        // A value the customer's profile lacks renders empty (as before minijinja), even
        // as `{{ a.b }}`; unknown names are refused when the campaign is created instead.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_fuel(Some(FUEL));
        env.set_auto_escape_callback(move |_| {
            if html {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.add_template_owned(NAME, source.clone())?;
        Ok(Template {
            source: source.into(),
            html,
            env: Arc::new(env),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Names the template reads that it does not set itself (top level only).
    pub fn variables(&self) -> BTreeSet<String> {
        match self.env.get_template(NAME) {
            Ok(t) => t.undeclared_variables(false).into_iter().collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Renders with `context` (a map of names to values).
    pub fn render(&self, context: &minijinja::Value) -> Result<String, TemplateError> {
        Ok(self.env.get_template(NAME)?.render(context)?)
    }

    /// The first name the template reads that is neither built in nor `known`.
    pub fn unknown_variable(&self, known: &BTreeSet<String>) -> Option<String> {
        self.variables()
            .into_iter()
            .find(|v| !BUILT_IN_VARIABLES.contains(&v.as_str()) && !known.contains(v))
    }

    /// Renders once with every variable set to a sample string, so that errors only a
    /// rendering shows (a filter on the wrong type, running out of fuel) are found when the
    /// campaign is created, not once per customer.
    pub fn trial_render(&self) -> Result<(), TemplateError> {
        use minijinja::Value;
        let sample: std::collections::BTreeMap<Value, Value> = self
            .variables()
            .into_iter()
            .map(|v| (Value::from(v), Value::from("sample")))
            .collect();
        self.render(&Value::from(sample)).map(|_| ())
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("source", &self.source)
            .field("html", &self.html)
            .finish()
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.html == other.html && self.source == other.source
    }
}

impl Eq for Template {}

impl Serialize for Template {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Template::text(source).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<String> for Template {
    type Error = TemplateError;
    fn try_from(s: String) -> Result<Self, TemplateError> {
        Template::text(s)
    }
}

/// An HTML template on the wire (a string), compiled with escaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlTemplate(pub Template);

impl Serialize for HtmlTemplate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

crate::schema::described!(
    Template,
    crate::schema::from_json(serde_json::json!({
        "type": "string",
        "maxLength": Template::MAX_BYTES,
        "description": "Jinja (minijinja) template: {{ name }}, {{ id }}, {{ language }} and the customer's attributes by name; unknown names and syntax errors are refused with 422 naming the place",
    }))
);
crate::schema::described!(
    HtmlTemplate,
    crate::schema::from_json(serde_json::json!({
        "type": "string",
        "maxLength": Template::MAX_BYTES,
        "description": "HTML part, Jinja, values HTML-escaped",
    }))
);

impl<'de> Deserialize<'de> for HtmlTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Template::html(source)
            .map(HtmlTemplate)
            .map_err(serde::de::Error::custom)
    }
}

/// A language tag as profiles and translations carry it (`es`, `en`, `pt-BR`), lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Language(String);

impl Language {
    const MAX_LEN: usize = 16;
    const MAX_PART_LEN: usize = 8;

    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.split('-').all(|part| {
                (1..=Self::MAX_PART_LEN).contains(&part.len())
                    && part.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        ok.then(|| Language(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `es` for `es-mx`: what a profile in a regional variant falls back to.
    pub fn primary(&self) -> &str {
        self.0.split('-').next().unwrap_or(&self.0)
    }
}

impl TryFrom<String> for Language {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Language::parse(&s).ok_or_else(|| format!("{s:?} is not a language tag such as es or en"))
    }
}

crate::schema::described!(
    Language,
    crate::schema::from_json(serde_json::json!({
        "type": "string",
        "maxLength": Language::MAX_LEN,
        "pattern": format!(
            "^[A-Za-z0-9]{{1,{p}}}(-[A-Za-z0-9]{{1,{p}}})*$",
            p = Language::MAX_PART_LEN
        ),
        "description": "Language tag (es, en, pt-BR)",
    }))
);

impl From<Language> for String {
    fn from(l: Language) -> String {
        l.0
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn placeholders_render_and_missing_values_render_empty() {
        let t = Template::text("Hola {{ name }}, {{ code }}{{ missing.deep }}!").unwrap();
        let out = t.render(&context! { name => "Ana", code => "X1" }).unwrap();
        assert_eq!(out, "Hola Ana, X1!");
    }

    #[test]
    fn html_templates_escape_what_they_insert_and_text_ones_do_not() {
        let ctx = context! { name => "<b>Ana</b> & co" };
        let html = Template::html("<p>{{ name }}</p>").unwrap();
        assert_eq!(
            html.render(&ctx).unwrap(),
            "<p>&lt;b&gt;Ana&lt;&#x2f;b&gt; &amp; co</p>"
        );
        let text = Template::text("{{ name }}").unwrap();
        assert_eq!(text.render(&ctx).unwrap(), "<b>Ana</b> & co");
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = Template::text("ok\n{% if name %}unclosed").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = Template::text("{{ name ").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn unknown_variables_are_those_neither_built_in_nor_known() {
        let t = Template::text("{{ name }} {{ code }} {% for x in items %}{{ x }}{% endfor %}")
            .unwrap();
        let known: BTreeSet<String> = ["code".to_string()].into();
        assert_eq!(t.unknown_variable(&known), Some("items".into()));
        let known: BTreeSet<String> = ["code".to_string(), "items".to_string()].into();
        assert_eq!(t.unknown_variable(&known), None);
    }

    #[test]
    fn a_runaway_loop_runs_out_of_fuel_at_the_trial_render() {
        let t = Template::text(
            "{% for a in range(1000) %}{% for b in range(1000) %}.{% endfor %}{% endfor %}",
        )
        .unwrap();
        assert!(t.trial_render().is_err());
        assert!(Template::text("{{ name | upper }}")
            .unwrap()
            .trial_render()
            .is_ok());
    }

    #[test]
    fn languages_are_tags_lower_cased_with_a_primary_part() {
        let l = Language::parse("es-MX").unwrap();
        assert_eq!((l.as_str(), l.primary()), ("es-mx", "es"));
        for bad in ["", "e s", "toolongsubtag", "es--mx"] {
            assert!(Language::parse(bad).is_none(), "{bad}");
        }
    }
}
