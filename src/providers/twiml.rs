//! TwiML, Twilio's call-control XML, written with `quick-xml`'s writer: every attribute and text
//! is escaped by the writer, and the document is well-formed by construction.

use quick_xml::{
    Writer,
    events::{BytesDecl, BytesText, Event},
};

/// One TwiML element: a verb (`<Dial>`, `<Say>`, `<Record>`…) or a noun inside one (`<Client>`,
/// `<Number>`), with its attributes in the order given and either text or child elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    name: &'static str,
    attributes: Vec<(&'static str, String)>,
    text: Option<String>,
    children: Vec<Element>,
}

impl Element {
    pub fn new(name: &'static str) -> Self {
        Self { name, attributes: Vec::new(), text: None, children: Vec::new() }
    }

    pub fn attr(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push((name, value.into()));
        self
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    pub fn child(mut self, child: Element) -> Self {
        self.children.push(child);
        self
    }

    fn write(&self, writer: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        let start =
            writer.create_element(self.name).with_attributes(self.attributes.iter().map(|(k, v)| (*k, v.as_str())));
        match (&self.text, self.children.is_empty()) {
            (Some(text), _) => start.write_text_content(BytesText::new(text))?,
            (None, true) => start.write_empty()?,
            (None, false) => start.write_inner_content(|inner| {
                for child in &self.children {
                    child.write(inner)?;
                }
                Ok(())
            })?,
        };
        Ok(())
    }
}

/// The document `<?xml …?><Response>verbs…</Response>` (`<Response/>` when there are none).
pub fn response(verbs: impl IntoIterator<Item = Element>) -> String {
    let mut root = Element::new("Response");
    root.children = verbs.into_iter().collect();
    let mut writer = Writer::new(Vec::new());
    // Writing into memory cannot fail.
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None))).expect("writes to memory");
    root.write(&mut writer).expect("writes to memory");
    String::from_utf8(writer.into_inner()).expect("the writer writes UTF-8 from UTF-8")
}

/// `<Say>text</Say><Hangup/>`: a spoken answer, then the end of the call.
pub fn say_and_hang_up(text: &str) -> String {
    response([Element::new("Say").text(text), Element::new("Hangup")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_answer_is_an_empty_response() {
        assert_eq!(response([]), r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#);
    }

    #[test]
    fn attributes_and_text_are_escaped() {
        let xml = response([Element::new("Dial")
            .attr("action", "https://h/x?a=1&b=\"2\"")
            .child(Element::new("Client").text("<staff & co>"))]);
        assert_eq!(
            xml,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Dial action="https://h/x?a=1&amp;b=&quot;2&quot;"><Client>&lt;staff &amp; co&gt;</Client></Dial></Response>"#
        );
    }
}
