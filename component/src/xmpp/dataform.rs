//! XEP-0004 data forms: the container of the push summary, the publish
//! options (the secret) and the registration commands' fields.

use super::element::Element;
use super::ns;

/// A data form reduced to what the protocols here use: its type and its
/// fields in order, each with its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataForm {
    /// `form`, `submit`, `result`, `cancel`.
    pub kind: String,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub var: String,
    pub kind: Option<String>,
    pub values: Vec<String>,
}

impl DataForm {
    /// Reads a `<x xmlns='jabber:x:data'/>`; `None` for any other element.
    pub fn from_element(el: &Element) -> Option<DataForm> {
        if !el.is("x", ns::DATA_FORMS) {
            return None;
        }
        let fields = el
            .children_named("field", ns::DATA_FORMS)
            .filter_map(|f| {
                let var = f.get_attr("var")?.to_owned();
                let values = f
                    .children_named("value", ns::DATA_FORMS)
                    .map(|v| v.text.clone())
                    .collect();
                Some(Field {
                    var,
                    kind: f.get_attr("type").map(str::to_owned),
                    values,
                })
            })
            .collect();
        Some(DataForm {
            kind: el.get_attr("type").unwrap_or("").to_owned(),
            fields,
        })
    }

    /// A new form of a type.
    pub fn new(kind: &str) -> Self {
        DataForm {
            kind: kind.into(),
            fields: Vec::new(),
        }
    }

    /// `FORM_TYPE`, if the form has one.
    pub fn form_type(&self) -> Option<&str> {
        self.value("FORM_TYPE")
    }

    /// First value of a field; `None` when the field is absent or has no
    /// value.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| f.var == var)
            .and_then(|f| f.values.first())
            .map(String::as_str)
    }

    /// First value of a field, `None` also when it is empty or blank.
    pub fn non_empty(&self, var: &str) -> Option<&str> {
        self.value(var).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Builder: adds a single-valued field.
    pub fn field(mut self, var: &str, kind: Option<&str>, value: &str) -> Self {
        self.fields.push(Field {
            var: var.into(),
            kind: kind.map(str::to_owned),
            values: vec![value.into()],
        });
        self
    }

    pub fn to_element(&self) -> Element {
        let mut x = Element::new("x", ns::DATA_FORMS).attr("type", self.kind.clone());
        for f in &self.fields {
            let mut field = Element::new("field", ns::DATA_FORMS).attr("var", f.var.clone());
            if let Some(k) = &f.kind {
                field.attrs.push(("type".into(), k.clone()));
            }
            for v in &f.values {
                field
                    .children
                    .push(Element::new("value", ns::DATA_FORMS).text(v.clone()));
            }
            x.children.push(field);
        }
        x
    }
}
