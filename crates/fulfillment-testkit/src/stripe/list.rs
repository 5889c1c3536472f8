//! Stripe's list pagination, as the API reference describes it: `limit`
//! (1–100, default 10), `starting_after` (the objects after this one in list
//! order), `ending_before` (the `limit` objects just before this one, still
//! in list order; `has_more` then says whether there are more before them),
//! never both. A cursor must name an object of the list, filters aside.

use super::reply::ApiFailure;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    Start,
    After(String),
    Before(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub cursor: Cursor,
}

/// Reads `limit`, `starting_after` and `ending_before` from `params`.
pub fn page_request(params: &[(String, String)]) -> Result<PageRequest, ApiFailure> {
    let one = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let limit = match one("limit") {
        None => 10,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                return Err(ApiFailure::invalid(
                    "limit",
                    "Invalid integer: limit must be between 1 and 100",
                ));
            }
        },
    };
    let cursor = match (one("starting_after"), one("ending_before")) {
        (Some(_), Some(_)) => {
            return Err(ApiFailure::invalid(
                "starting_after",
                "You may only specify one of these parameters: ending_before, starting_after.",
            ));
        }
        (Some(after), None) => Cursor::After(after),
        (None, Some(before)) => Cursor::Before(before),
        (None, None) => Cursor::Start,
    };
    Ok(PageRequest { limit, cursor })
}

/// One page of `all` (in list order) among the items `keep` accepts; the
/// cursor is looked up in `all`. Returns the page and `has_more`.
pub fn page<'a, T>(
    all: &'a [T],
    keep: impl Fn(&T) -> bool,
    id: impl Fn(&T) -> &str,
    request: &PageRequest,
    object: &str,
) -> Result<(Vec<&'a T>, bool), ApiFailure> {
    let position = |cursor: &str, param: &str| {
        all.iter()
            .position(|item| id(item) == cursor)
            .ok_or_else(|| ApiFailure::missing(param, &format!("No such {object}: '{cursor}'")))
    };
    let kept = |items: &'a [T]| items.iter().filter(|item| keep(item)).collect::<Vec<_>>();
    Ok(match &request.cursor {
        Cursor::Start => first(kept(all), request.limit),
        Cursor::After(cursor) => first(
            kept(&all[position(cursor, "starting_after")? + 1..]),
            request.limit,
        ),
        Cursor::Before(cursor) => {
            let mut before = kept(&all[..position(cursor, "ending_before")?]);
            let has_more = before.len() > request.limit;
            let page = before.split_off(before.len().saturating_sub(request.limit));
            (page, has_more)
        }
    })
}

fn first<T>(mut items: Vec<T>, limit: usize) -> (Vec<T>, bool) {
    let has_more = items.len() > limit;
    items.truncate(limit);
    (items, has_more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        // Newest first, as lists are: evt_9 … evt_0.
        (0..n).rev().map(|i| format!("evt_{i}")).collect()
    }

    fn request(limit: usize, cursor: Cursor) -> PageRequest {
        PageRequest { limit, cursor }
    }

    fn get(
        all: &[String],
        keep: impl Fn(&String) -> bool,
        req: PageRequest,
    ) -> (Vec<String>, bool) {
        let (page, more) = page(all, keep, |s| s.as_str(), &req, "event").unwrap();
        (page.into_iter().cloned().collect(), more)
    }

    #[test]
    fn walking_forward_visits_everything_once() {
        let all = ids(25);
        let mut seen = Vec::new();
        let mut cursor = Cursor::Start;
        loop {
            let (page, more) = get(&all, |_| true, request(10, cursor));
            seen.extend(page.clone());
            if !more {
                break;
            }
            cursor = Cursor::After(page.last().unwrap().clone());
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn walking_backward_from_the_oldest_reaches_the_newest() {
        let all = ids(25);
        // Oldest first: start before-nothing is impossible, so from the last one.
        let oldest = all.last().unwrap().clone();
        let mut seen = vec![oldest.clone()];
        let mut cursor = Cursor::Before(oldest);
        loop {
            let (page, more) = get(&all, |_| true, request(10, cursor));
            // Each page is still newest first; walking back, prepend it reversed.
            seen.extend(page.iter().rev().cloned());
            if !more {
                break;
            }
            cursor = Cursor::Before(page.first().unwrap().clone());
        }
        seen.reverse();
        assert_eq!(seen, all);
    }

    #[test]
    fn filters_apply_after_the_cursor_is_found() {
        let all = ids(10);
        let even = |s: &String| s.trim_start_matches("evt_").parse::<u32>().unwrap() % 2 == 0;
        // evt_7 is filtered out but still a valid cursor.
        let (page, more) = get(&all, even, request(2, Cursor::After("evt_7".into())));
        assert_eq!(
            (page, more),
            (vec!["evt_6".to_owned(), "evt_4".to_owned()], true)
        );
        let (page, more) = get(&all, even, request(3, Cursor::Before("evt_3".into())));
        assert_eq!(
            (page, more),
            (
                vec!["evt_8".to_owned(), "evt_6".to_owned(), "evt_4".to_owned()],
                false
            )
        );
    }

    #[test]
    fn bad_requests_are_refused_like_stripe() {
        let params = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(page_request(&params(&[])).unwrap().limit, 10);
        for limit in ["0", "101", "ten", "-1"] {
            assert_eq!(
                page_request(&params(&[("limit", limit)]))
                    .unwrap_err()
                    .status,
                400
            );
        }
        let both = params(&[("starting_after", "a"), ("ending_before", "b")]);
        assert_eq!(page_request(&both).unwrap_err().status, 400);
        let all = ids(3);
        let unknown = request(10, Cursor::After("evt_404".into()));
        assert_eq!(
            page(&all, |_| true, |s| s.as_str(), &unknown, "event")
                .unwrap_err()
                .status,
            400
        );
    }
}
