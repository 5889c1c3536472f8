//! `AMQP_URL` as a list: the nodes of one RabbitMQ cluster, each a full URL
//! (credentials and vhost as for a single URL), and the order a process
//! tries them in. Pure: parsing and rotation, no IO.
//!
//! A process connects to the first URL that answers, starting with the first
//! in the list; when the connection it has is lost it starts again with the
//! *next* one, so it leaves a node that went down instead of waiting for it.
//! Every process starting with the first URL keeps the behaviour
//! predictable: to spread connections, give replicas the list in different
//! orders (or one URL of a load balancer).

use std::fmt;
use std::str::FromStr;

use crate::config::Secret;

/// One broker node: the URL (it may hold a password) and a label safe to log.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    url: Secret,
    label: String,
}

impl BrokerUrl {
    /// Parses one URL as lapin will when connecting.
    fn parse(s: &str) -> Result<BrokerUrl, String> {
        let uri =
            lapin::uri::AMQPUri::from_str(s).map_err(|e| format!("not a valid AMQP URL: {e}"))?;
        // Scheme, host, port and vhost: never the user or the password.
        let label = format!(
            "{}://{}:{}/{}",
            uri.scheme,
            uri.authority.host,
            uri.authority.port,
            uri.vhost.replace('/', "%2f")
        );
        Ok(BrokerUrl {
            url: Secret::new(s),
            label,
        })
    }

    /// The URL itself, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    /// `amqp://host:port/vhost`, for logs and errors.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({})", self.label)
    }
}

/// One or more broker URLs; never empty (only [`BrokerUrls::parse`] makes one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUrls(Vec<BrokerUrl>);

impl BrokerUrls {
    /// Comma-separated URLs, surrounding blanks ignored. An empty entry is
    /// an error (a stray comma is a typo, not a node). A comma inside a
    /// password must be written `%2C`.
    pub fn parse(s: &str) -> Result<BrokerUrls, String> {
        let entries: Vec<&str> = s.split(',').map(str::trim).collect();
        let count = entries.len();
        let urls = entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                let which = || match count {
                    1 => String::new(),
                    n => format!("URL {} of {n}: ", i + 1),
                };
                if entry.is_empty() {
                    return Err(format!("{}empty", which()));
                }
                BrokerUrl::parse(entry).map_err(|e| format!("{}{e}", which()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BrokerUrls(urls))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: kept for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, index: usize) -> &BrokerUrl {
        &self.0[index % self.0.len()]
    }

    /// Every URL once, with its index, starting at `from` and wrapping
    /// around: the order of one round of connection attempts.
    pub fn rotation(&self, from: usize) -> impl Iterator<Item = (usize, &BrokerUrl)> + '_ {
        let n = self.0.len();
        (0..n).map(move |k| {
            let i = (from + k) % n;
            (i, &self.0[i])
        })
    }

    /// Where the next round starts after the connection to `index` was
    /// lost: the node after it (the lost one is tried last).
    pub fn after_loss(&self, index: usize) -> usize {
        (index + 1) % self.0.len()
    }

    /// Every node's label, comma-separated (for a log line at start).
    pub fn labels(&self) -> String {
        self.0
            .iter()
            .map(BrokerUrl::label)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str =
        "amqp://u:hunter2@a:5681/%2f, amqp://u:hunter2@b:5682/%2f ,amqp://u:hunter2@c/v";

    #[test]
    fn one_url_is_a_list_of_one() {
        let urls = BrokerUrls::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(urls.len(), 1);
        assert_eq!(urls.get(0).label(), "amqp://127.0.0.1:5672/%2f");
        assert_eq!(urls.after_loss(0), 0);
        let order: Vec<usize> = urls.rotation(0).map(|(i, _)| i).collect();
        assert_eq!(order, [0]);
    }

    #[test]
    fn several_urls_keep_their_order_and_credentials() {
        let urls = BrokerUrls::parse(THREE).unwrap();
        assert_eq!(urls.len(), 3);
        assert_eq!(urls.get(0).expose(), "amqp://u:hunter2@a:5681/%2f");
        assert_eq!(urls.get(1).expose(), "amqp://u:hunter2@b:5682/%2f");
        assert_eq!(urls.get(2).label(), "amqp://c:5672/v");
        assert_eq!(
            urls.labels(),
            "amqp://a:5681/%2f,amqp://b:5682/%2f,amqp://c:5672/v"
        );
    }

    fn list_of(n: usize) -> BrokerUrls {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("amqp://u:p@node{i}:5672/%2f"))
            .collect();
        BrokerUrls::parse(&urls.join(",")).unwrap()
    }

    #[test]
    fn rotation_visits_every_node_once_from_any_start() {
        for n in 1..=6 {
            let urls = list_of(n);
            for from in 0..3 * n {
                let order: Vec<usize> = urls.rotation(from).map(|(i, _)| i).collect();
                let expected: Vec<usize> = (0..n).map(|k| (from + k) % n).collect();
                assert_eq!(order, expected, "{n} nodes from {from}");
                for (i, url) in urls.rotation(from) {
                    assert_eq!(url.label(), format!("amqp://node{i}:5672/%2f"));
                }
            }
        }
    }

    #[test]
    fn a_lost_node_is_tried_last_and_its_successor_first() {
        for n in 1..=6 {
            let urls = list_of(n);
            for lost in 0..n {
                let order: Vec<usize> = urls
                    .rotation(urls.after_loss(lost))
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(order.last(), Some(&lost), "{n} nodes, lost {lost}");
                assert_eq!(order[0], (lost + 1) % n, "{n} nodes, lost {lost}");
            }
        }
    }

    #[test]
    fn bad_entries_are_named_by_position_without_the_value() {
        let e = BrokerUrls::parse("amqp://u:hunter2@a/%2f,,amqp://b").unwrap_err();
        assert_eq!(e, "URL 2 of 3: empty");
        let e = BrokerUrls::parse("amqp://u:hunter2@a/%2f,http://u:hunter2@b").unwrap_err();
        assert!(e.starts_with("URL 2 of 2: not a valid AMQP URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(BrokerUrls::parse(" ").unwrap_err(), "empty");
        assert!(BrokerUrls::parse("amqp://a,").is_err());
    }

    #[test]
    fn passwords_never_show_in_debug_or_labels() {
        let urls = BrokerUrls::parse(THREE).unwrap();
        assert!(!format!("{urls:?}").contains("hunter2"));
        assert!(!urls.labels().contains("hunter2"));
        assert!(!urls.labels().contains("u@"));
    }
}
