//! Email alerts over SMTP with lettre: a plain-text and an HTML part.

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::{header::ContentType, Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::render::Templates;
use super::{Notifier, SendError};
use crate::config::{Secret, SmtpConfig, SmtpTls};
use crate::engine::AlertEvent;

pub struct EmailNotifier {
    /// The channel's template overrides.
    templates: Templates,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmailSetupError {
    #[error("invalid address {0:?}: {1}")]
    Address(String, lettre::address::AddressError),
    #[error("smtp: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

impl EmailNotifier {
    pub fn new(
        smtp: &SmtpConfig,
        password: Option<Secret>,
        to: &[String],
        templates: Templates,
    ) -> Result<Self, EmailSetupError> {
        let parse = |s: &String| {
            s.parse::<Mailbox>()
                .map_err(|e| EmailSetupError::Address(s.clone(), e))
        };
        let from = parse(&smtp.from)?;
        let to = to.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        let tls_params = || {
            TlsParameters::builder(smtp.host.clone())
                .dangerous_accept_invalid_certs(smtp.danger_accept_invalid_certs)
                .build()
        };
        let mut builder = match smtp.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host),
            SmtpTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    .tls(Tls::Required(tls_params()?))
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                .tls(Tls::Wrapper(tls_params()?)),
        }
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(smtp.timeout_secs)));
        if let (Some(user), Some(pass)) = (&smtp.username, password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), pass.expose().to_string()));
        }
        Ok(EmailNotifier {
            transport: builder.build(),
            from,
            to,
            templates,
        })
    }

    /// Template overrides for an event: the rule's, then the channel's.
    fn overrides<'a>(&'a self, e: &'a AlertEvent) -> [&'a Templates; 2] {
        [&e.templates, &self.templates]
    }

    /// Builds the message for an event.
    pub fn message(&self, e: &AlertEvent) -> Result<Message, SendError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(super::render::subject(e, &self.overrides(e)));
        for t in &self.to {
            b = b.to(t.clone());
        }
        b = b.message_id(Some(format!(
            "<{}@vigie>",
            e.event_id.replace(
                |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
                "."
            )
        )));
        let text = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(super::render::text_body(e, &self.overrides(e)));
        let html = SinglePart::builder()
            .header(ContentType::TEXT_HTML)
            .body(super::render::html_body(e, &self.overrides(e)));
        // The chart goes inline beside the HTML part; without it the email still says it all.
        let body = match super::chart::png(e) {
            Ok(png) => {
                let chart = Attachment::new_inline("chart".to_string()).body(
                    png,
                    ContentType::parse("image/png").expect("static content type"),
                );
                MultiPart::alternative()
                    .singlepart(text)
                    .multipart(MultiPart::related().singlepart(html).singlepart(chart))
            }
            Err(_) => MultiPart::alternative().singlepart(text).singlepart(html),
        };
        b.multipart(body)
            .map_err(|err| SendError::Permanent(format!("cannot build email: {err}")))
    }
}

impl EmailNotifier {
    /// One message for several events (a group, a digest, a night held back): each alert
    /// once, as its latest event tells it, with a line on its earlier events, and each
    /// alert's chart inline.
    pub fn group_message(&self, events: &[AlertEvent]) -> Result<Message, SendError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(super::render::group_subject(events));
        for t in &self.to {
            b = b.to(t.clone());
        }
        let alerts = super::render::by_alert(events);
        let mut texts = Vec::new();
        let mut htmls = Vec::new();
        let mut charts = Vec::new();
        for (i, (e, earlier)) in alerts.iter().enumerate() {
            let mut text = super::render::text_body(e, &self.overrides(e));
            let mut html = super::render::html_body(e, &self.overrides(e));
            if let Some(line) = super::render::earlier_line(earlier) {
                text = format!("{line}\n\n{text}");
                html = format!(
                    "<p><i>{}</i></p>\n{html}",
                    super::render::html_escape(&line)
                );
            }
            // Each alert's chart under its own name; the body asks for `cid:chart`.
            let cid = format!("chart-{i}");
            html = html.replace("cid:chart\"", &format!("cid:{cid}\""));
            if let Ok(png) = super::chart::png(e) {
                charts.push(Attachment::new_inline(cid).body(
                    png,
                    ContentType::parse("image/png").expect("static content type"),
                ));
            }
            texts.push(text);
            htmls.push(html);
        }
        let sep = "\n------------------------------------------------------------\n\n";
        let text = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(texts.join(sep));
        let html = SinglePart::builder()
            .header(ContentType::TEXT_HTML)
            .body(htmls.join("<hr>"));
        let mut related = MultiPart::related().singlepart(html);
        for chart in charts {
            related = related.singlepart(chart);
        }
        b.multipart(MultiPart::alternative().singlepart(text).multipart(related))
            .map_err(|err| SendError::Permanent(format!("cannot build email: {err}")))
    }

    async fn deliver(&self, msg: Message) -> Result<(), SendError> {
        match self.transport.send(msg).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_permanent() => Err(SendError::Permanent(format!(
                "smtp rejected the message: {err}"
            ))),
            Err(err) => Err(SendError::Retryable {
                message: format!("smtp: {err}"),
                retry_after: None,
            }),
        }
    }
}

impl Notifier for EmailNotifier {
    fn send<'a>(&'a self, e: &'a AlertEvent) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move { self.deliver(self.message(e)?).await })
    }

    fn send_group<'a>(&'a self, events: &'a [AlertEvent]) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move { self.deliver(self.group_message(events)?).await })
    }
}
