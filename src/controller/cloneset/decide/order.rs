//! The order of a CloneSet's update beyond the default one (upstream `pkg/util/updatesort`, as
//! `sync/cloneset_update.go: SortUpdateIndexes` applies it; `docs/upstream/cloneset.md` §4.2
//! step 5): the pods waiting to update, already in the default order, sorted (stably) by
//! `updateStrategy.priorityStrategy`, then spread by `updateStrategy.scatterStrategy`. Pure.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};

use super::PodFacts;
use crate::api::kruise::{CloneSetUpdateStrategy, UpdatePriorityStrategy, UpdateScatterTerm};

/// `candidates` (the pods waiting to update, in the default order) in the order the strategy's
/// priority and scatter sorts give them; `pods` are all the CloneSet's active pods, whose totals
/// the scatter sort weighs.
pub fn update_order<'a>(
    mut candidates: Vec<&'a PodFacts>,
    pods: &[PodFacts],
    strategy: &CloneSetUpdateStrategy,
) -> Vec<&'a PodFacts> {
    if let Some(priority) = &strategy.priority_strategy {
        let weights = weights(priority);
        candidates.sort_by_cached_key(|p| rank(priority, &weights, &p.labels));
    }
    let terms = &strategy.scatter_strategy;
    if terms.is_empty() || candidates.len() <= 1 {
        return candidates;
    }
    for term in scatter_terms(&candidates, terms) {
        candidates = scatter(term, candidates, pods);
    }
    candidates
}

/// A pod's rank under the priority strategy, lowest first (upstream `prioritySort.compare`):
/// with weight terms (`weights`: each term's weight and [`selector`]), the sum of the weights of
/// those whose selector selects the pod, highest first (the order terms then do not count);
/// else the index of the first order term whose key the pod carries (`None`, before all others,
/// when it carries none: upstream's code, contrary to its API comment), then the integer that
/// key's value ends with, highest first.
fn rank(
    strategy: &UpdatePriorityStrategy,
    weights: &[(i64, Option<Selector>)],
    labels: &BTreeMap<String, String>,
) -> (Reverse<i64>, Option<usize>, Reverse<i64>) {
    if !weights.is_empty() {
        let weight = weights
            .iter()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.matches(labels)))
            .fold(0_i64, |sum, (w, _)| sum.saturating_add(*w));
        return (Reverse(weight), None, Reverse(0));
    }
    let (level, order) = strategy
        .order_priority
        .iter()
        .enumerate()
        .find_map(|(i, t)| Some((Some(i), trailing_int(labels.get(&t.ordered_key)?))))
        .unwrap_or((None, 0));
    (Reverse(0), level, Reverse(order))
}

/// The weight terms' weights and selectors, read once for a sort.
fn weights(strategy: &UpdatePriorityStrategy) -> Vec<(i64, Option<Selector>)> {
    strategy
        .weight_priority
        .iter()
        .map(|t| (i64::from(t.weight), selector(&t.match_selector)))
        .collect()
}

/// A weight term's selector as upstream's unchecked `ValidatedLabelSelectorAsSelector` reads it:
/// an empty selector selects all, one with an unknown operator nothing (`None`), and missing
/// values are no values (`NotIn` then selects all).
fn selector(selector: &LabelSelector) -> Option<Selector> {
    let mut selector = selector.clone();
    for requirement in selector.match_expressions.iter_mut().flatten() {
        requirement.values.get_or_insert_default();
    }
    Selector::try_from(selector).ok()
}

/// The integer `value` ends with (10 in `sts-10`), 0 without one or beyond `i64` (upstream
/// `getIntFromStringSuffix`).
fn trailing_int(value: &str) -> i64 {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    value
        .get(digits..)
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// Whether the pod's label `term.key` (`""` when absent) is `term.value`.
fn matches(term: &UpdateScatterTerm, pod: &PodFacts) -> bool {
    pod.labels.get(&term.key).map_or("", String::as_str) == term.value
}

/// The terms to scatter by, in turn (upstream `getScatterTerms`): a single term as it is; else
/// those some candidate carries, most carried first, ties in the strategy's order.
fn scatter_terms<'t>(
    candidates: &[&PodFacts],
    terms: &'t [UpdateScatterTerm],
) -> Vec<&'t UpdateScatterTerm> {
    if let [term] = terms {
        return vec![term];
    }
    let mut counted: Vec<(&UpdateScatterTerm, usize)> = Vec::new();
    for term in terms {
        let n = candidates
            .iter()
            .filter(|p| p.labels.get(&term.key) == Some(&term.value))
            .count();
        if n == 0 {
            continue;
        }
        match counted.iter_mut().find(|(t, _)| *t == term) {
            Some((_, count)) => *count = count.saturating_add(n),
            None => counted.push((term, n)),
        }
    }
    counted.sort_by_key(|&(_, n)| Reverse(n));
    counted.into_iter().map(|(t, _)| t).collect()
}

/// The candidates with those matching `term` spread among the others (upstream
/// `scatterPodsByRule`): nothing moves unless at least two match and two do not; the last match
/// goes last, and the others alternate with the unmatched in groups sized by
/// [`density_groups`].
fn scatter<'a>(
    term: &UpdateScatterTerm,
    candidates: Vec<&'a PodFacts>,
    pods: &[PodFacts],
) -> Vec<&'a PodFacts> {
    let (mut matched, unmatched): (Vec<&PodFacts>, Vec<&PodFacts>) =
        candidates.iter().copied().partition(|p| matches(term, p));
    if matched.len() <= 1 || unmatched.len() <= 1 {
        return candidates;
    }
    let Some(last) = matched.pop() else {
        return candidates;
    };
    let total_matched = pods.iter().filter(|p| matches(term, p)).count();
    let groups = density_groups(
        total_matched.saturating_sub(1),
        pods.len().saturating_sub(total_matched),
        matched.len(),
        unmatched.len(),
    );
    let (mut matched, mut unmatched) = (matched.into_iter(), unmatched.into_iter());
    let mut order = Vec::with_capacity(candidates.len());
    order.extend(unmatched.by_ref().take(groups.unmatched_first));
    for _ in 0..groups.count {
        order.extend(matched.by_ref().take(groups.matched_size));
        order.extend(unmatched.by_ref().take(groups.unmatched_size));
    }
    order.extend(matched);
    order.extend(unmatched);
    order.push(last);
    order
}

/// How matched and unmatched candidates alternate (upstream `scatterGroup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Groups {
    /// Groups of each.
    count: usize,
    matched_size: usize,
    unmatched_size: usize,
    /// Unmatched candidates before the first group.
    unmatched_first: usize,
}

/// As many groups as the fewer of `matched` and `unmatched`, each's size its share rounded
/// (upstream `newScatterGroup`).
fn even_groups(matched: usize, unmatched: usize) -> Groups {
    let count = matched.min(unmatched);
    Groups {
        count,
        matched_size: div_round(matched, count),
        unmatched_size: div_round(unmatched, count),
        unmatched_first: 0,
    }
}

/// `n / d` rounded half up (upstream `math.Round` of the quotient), 0 when `d` is 0.
fn div_round(n: usize, d: usize) -> usize {
    n.saturating_mul(2)
        .saturating_add(d)
        .checked_div(d.saturating_mul(2))
        .unwrap_or(0)
}

/// The groups for the candidates (upstream `calculateGroupByDensity`): even ones, unless the
/// candidates are denser in matches than all pods (compared as upstream does, in `f32`); then
/// groups sized as all pods' even ones are, as many as the candidates fill, and the unmatched
/// candidates left over go first.
fn density_groups(
    total_matched: usize,
    total_unmatched: usize,
    matched: usize,
    unmatched: usize,
) -> Groups {
    let ratio = |unmatched: usize, matched: usize| unmatched as f32 / matched as f32;
    if ratio(total_unmatched, total_matched) >= ratio(unmatched, matched) {
        return even_groups(matched, unmatched);
    }
    let sizes = even_groups(total_matched, total_unmatched);
    let count = matched
        .checked_div(sizes.matched_size)
        .unwrap_or(0)
        .min(unmatched.checked_div(sizes.unmatched_size).unwrap_or(0));
    Groups {
        count,
        unmatched_first: unmatched.saturating_sub(count.saturating_mul(sizes.unmatched_size)),
        ..sizes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kruise::{UpdatePriorityOrderTerm, UpdatePriorityWeightTerm};
    use serde_json::json;

    // Upstream's tables (`priority_sort_test.go`, `scatter_sort_test.go`), with shorter labels:
    // a pod is `k=v,k=v` (parts without `=` ignored, as upstream's tests do), `-` no pod
    // (upstream's nil entry); `a=A`, `b=B`, `c=C` stand for `labelA=AAA`, `labelB=BBB`,
    // `labelC=CCC`, and `x=e`, `y=s` for the unrelated labels.

    fn labels(spec: &str) -> BTreeMap<String, String> {
        spec.split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Pods named by their index in `specs`.
    fn pods(specs: &[&str]) -> Vec<PodFacts> {
        specs
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != "-")
            .map(|(i, s)| PodFacts {
                name: i.to_string(),
                labels: labels(s),
                ..Default::default()
            })
            .collect()
    }

    /// The order of the first `n` pods as the candidates, by index.
    fn order(pods: &[PodFacts], n: usize, strategy: &CloneSetUpdateStrategy) -> Vec<usize> {
        update_order(pods.iter().take(n).collect(), pods, strategy)
            .iter()
            .map(|p| p.name.parse().unwrap())
            .collect()
    }

    fn terms(terms: &[&str]) -> Vec<UpdateScatterTerm> {
        terms
            .iter()
            .map(|t| {
                let (key, value) = t.split_once('=').unwrap();
                UpdateScatterTerm {
                    key: key.into(),
                    value: value.into(),
                }
            })
            .collect()
    }

    fn scattered(scatter: &[&str]) -> CloneSetUpdateStrategy {
        CloneSetUpdateStrategy {
            scatter_strategy: terms(scatter),
            ..Default::default()
        }
    }

    fn weights(terms: &[(i32, &str)]) -> UpdatePriorityStrategy {
        UpdatePriorityStrategy {
            weight_priority: terms
                .iter()
                .map(|(weight, selected)| UpdatePriorityWeightTerm {
                    weight: *weight,
                    match_selector: LabelSelector {
                        match_labels: Some(labels(selected)),
                        ..Default::default()
                    },
                })
                .collect(),
            ..Default::default()
        }
    }

    fn ordered(keys: &[&str]) -> UpdatePriorityStrategy {
        UpdatePriorityStrategy {
            order_priority: keys
                .iter()
                .map(|k| UpdatePriorityOrderTerm {
                    ordered_key: k.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn prioritized(priority: UpdatePriorityStrategy) -> CloneSetUpdateStrategy {
        CloneSetUpdateStrategy {
            priority_strategy: Some(priority),
            ..Default::default()
        }
    }

    /// Upstream `TestCompare`: whether the first pod goes first or ties.
    #[test]
    fn priority_compare() {
        let foo_bar = weights(&[(20, "key=foo"), (10, "key=bar")]);
        let three = |third| weights(&[(20, "key1=foo"), (10, "key2=bar"), (third, "key3=baz")]);
        let keys = ordered(&["key1", "key2"]);
        let cases = [
            (&foo_bar, "", "", true),
            (&foo_bar, "key=foo", "key=foo", true),
            (&foo_bar, "key=bar", "key=foo", false),
            (&foo_bar, "", "key=bar", false),
            (&foo_bar, "", "key=foo", false),
            (&three(15), "key1=foo", "key2=bar,key3=baz", false),
            (&three(5), "key2=bar,key3=baz", "key1=foo", false),
            (&keys, "", "", true),
            (&keys, "key1=o-10", "key1=o-5", true),
            (&keys, "key1=o-10", "key1=o-10", true),
            (&keys, "key1=o-10", "key1=o-20", false),
            (&keys, "key2=o-20", "key1=o-10", false),
            (&keys, "key2=o-20", "key2=o-10", true),
        ];
        for (i, (strategy, a, b, want)) in cases.into_iter().enumerate() {
            let read = super::weights(strategy);
            let rank = |l| rank(strategy, &read, &labels(l));
            let first = rank(a) <= rank(b);
            assert_eq!(first, want, "case {i}");
        }
    }

    /// Upstream `Test_prioritySort_Sort`, and what upstream's code does beyond it.
    #[test]
    fn priority_sort() {
        let four = pods(&["hello=world", "", "foo=bar", ""]);
        let cases = [
            (
                "empty priority strategy",
                pods(&["", "", ""]),
                UpdatePriorityStrategy::default(),
                vec![0, 1, 2],
            ),
            (
                "keep original order if not match any priority rule",
                four.clone(),
                weights(&[(100, "foo=bar"), (90, "hello=world")]),
                vec![2, 0, 1, 3],
            ),
            (
                "no Pods matched any priority rule, keep original order",
                four,
                weights(&[(100, "not=match"), (90, "not1=match1")]),
                vec![0, 1, 2, 3],
            ),
            (
                "weights add up",
                pods(&["a=1", "a=1,b=1", "b=1", ""]),
                weights(&[(10, "a=1"), (15, "b=1")]),
                vec![1, 2, 0, 3],
            ),
            (
                "a pod with none of the ordered keys goes first",
                pods(&["k=a-1", "", "k=a-2", "j=9", "k=x"]),
                ordered(&["k", "j"]),
                vec![1, 2, 0, 4, 3],
            ),
            (
                "with weights and orders only the weights count",
                pods(&["b=9", "a=1", "b=1"]),
                UpdatePriorityStrategy {
                    order_priority: ordered(&["b"]).order_priority,
                    ..weights(&[(10, "a=1")])
                },
                vec![1, 0, 2],
            ),
        ];
        for (name, pods, strategy, want) in cases {
            let n = pods.len();
            assert_eq!(order(&pods, n, &prioritized(strategy)), want, "{name}");
        }
    }

    #[test]
    fn trailing_integers() {
        let cases = [
            ("sts-10", 10),
            ("5", 5),
            ("007", 7),
            ("-5", 5),
            ("a1b", 0),
            ("abc", 0),
            ("", 0),
            ("x-9223372036854775807", i64::MAX),
            ("x-9223372036854775808", 0),
            ("99999999999999999999999999", 0),
            ("é9", 9),
        ];
        for (value, want) in cases {
            assert_eq!(trailing_int(value), want, "{value}");
        }
    }

    #[test]
    fn weight_selectors() {
        let cases = [
            (json!({}), "a=1", true),
            (json!({"matchLabels": {"a": "1"}}), "a=1", true),
            (json!({"matchLabels": {"a": "1"}}), "a=2", false),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "NotIn"}]}),
                "a=1",
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
                "a=1",
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                "a=1",
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["0"]}]}),
                "a=1",
                false,
            ),
        ];
        for (written, pod, want) in cases {
            let read: LabelSelector = serde_json::from_value(written).unwrap();
            let selects = selector(&read).is_some_and(|s| s.matches(&labels(pod)));
            assert_eq!(selects, want, "{read:?} {pod}");
        }
    }

    /// Upstream `TestGenerateRules`, and the count order it does not cover.
    #[test]
    fn scatter_terms_by_count() {
        let six = pods(&["", "", "b=b", "b=B", "a=A", "a=A"]);
        let candidates: Vec<&PodFacts> = six.iter().collect();
        let cases: [(&[&str], &[&str]); 5] = [
            (&["a=A"], &["a=A"]),
            (&["a=A", "b=B"], &["a=A", "b=B"]),
            (&["b=B", "a=A"], &["a=A", "b=B"]),
            (&["c=C", "a=A"], &["a=A"]),
            (&["c=C"], &["c=C"]),
        ];
        for (strategy, want) in cases {
            let strategy = terms(strategy);
            let got: Vec<UpdateScatterTerm> = scatter_terms(&candidates, &strategy)
                .into_iter()
                .cloned()
                .collect();
            assert_eq!(got, terms(want), "{strategy:?}");
        }
    }

    /// Upstream `TestScatterPodsByRule`: all pods are candidates.
    #[test]
    fn scatter_by_one_term() {
        let cases: [(&str, &[&str], &[usize]); 12] = [
            ("no label", &[""], &[0]),
            ("only one scattered pod", &["a=A"], &[0]),
            (
                "odd scattered pod + odd ordinary pod",
                &["a=A", "bbb"],
                &[0, 1],
            ),
            (
                "even scattered pods + even ordinary pods",
                &["", "", "", "", "a=A", "a=A"],
                &[4, 0, 1, 2, 3, 5],
            ),
            (
                "odd scattered pods + odd ordinary pods",
                &["", "", "", "a=A", "a=A", "a=A"],
                &[3, 0, 1, 4, 2, 5],
            ),
            (
                "even scattered pods + odd ordinary pods",
                &["", "", "", "a=A", "", "", "a=A"],
                &[3, 0, 1, 2, 4, 5, 6],
            ),
            (
                "odd scattered pods + even ordinary pods",
                &["", "", "", "", "", "", "a=A", "a=A", "a=A"],
                &[6, 0, 1, 2, 7, 3, 4, 5, 8],
            ),
            (
                "even scattered + even ordinary, more scattered",
                &["", "", "a=A", "a=A", "a=A", "a=A"],
                &[2, 3, 0, 4, 1, 5],
            ),
            (
                "odd scattered + odd ordinary, more scattered",
                &["", "", "", "a=A", "a=A", "a=A"],
                &[3, 0, 1, 4, 2, 5],
            ),
            (
                "even scattered + odd ordinary, more scattered",
                &["", "", "a=A", "", "a=A", "a=A", "a=A", "a=A", "a=A"],
                &[2, 4, 0, 5, 6, 1, 7, 3, 8],
            ),
            (
                "odd scattered + even ordinary, more scattered",
                &["", "a=A", "", "a=A", "", "", "a=A", "a=A", "a=A"],
                &[1, 0, 3, 2, 6, 4, 7, 5, 8],
            ),
            (
                "invalid label",
                &["", "", "", "", "ee", "a", "", "a=A", "a=A", "a=A,b=B"],
                &[7, 0, 1, 2, 3, 8, 4, 5, 6, 9],
            ),
        ];
        for (name, specs, want) in cases {
            let pods = pods(specs);
            assert_eq!(
                order(&pods, pods.len(), &scattered(&["a=A"])),
                want,
                "{name}"
            );
        }
    }

    /// Upstream `TestSort`: the candidates are the first pods, as many as the result has.
    #[test]
    fn scatter_sort() {
        /// A name, the pods, the scatter terms, the order.
        type Case = (
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
            &'static [usize],
        );
        const AB: &[&str] = &["a=A", "b=B"];
        let cases: [Case; 21] = [
            ("a scattered pod", &["a=A,b=B"], &["a=A"], &[0]),
            (
                "all ordinary pods",
                &["", "", "", "", "", ""],
                &[],
                &[0, 1, 2, 3, 4, 5],
            ),
            (
                "one pod one label",
                &["", "", "", "", "a=A", "a=A"],
                &["a=A"],
                &[4, 0, 1, 2, 3, 5],
            ),
            (
                "one pod more labels",
                &["", "", "", "", "x=e", "y=s", "b=B", "a=A", "a=A", "a=A,b=B"],
                &["b=B"],
                &[6, 0, 1, 2, 3, 4, 5, 7, 8, 9],
            ),
            (
                "2 dimensions + one pod one label",
                &["b=B", "b=B", "", "", "a=A", "a=A"],
                AB,
                &[0, 4, 2, 3, 5, 1],
            ),
            (
                "2 dimensions + one pod more labels",
                &["", "", "", "b=B", "a=A,b=B", "a=A"],
                AB,
                &[4, 0, 1, 2, 5, 3],
            ),
            (
                "2 dimensions + same label + sequence: A + B",
                &["", "", "", "", "x=e", "y=s", "b=B", "a=A", "a=A", "b=B"],
                &["b=B", "a=A"],
                &[7, 6, 0, 1, 2, 3, 4, 5, 9, 8],
            ),
            (
                "2 dimensions + same label + sequence: B + A",
                &["", "", "", "", "x=e", "y=s", "b=B", "a=A", "a=A", "b=B"],
                AB,
                &[6, 7, 0, 1, 2, 3, 4, 5, 8, 9],
            ),
            (
                "same pod same label, even scattered + even ordinary",
                &["", "", "", "", "x=e", "y=s", "a=A,b=B", "", "", "a=A,b=B"],
                AB,
                &[6, 0, 1, 2, 3, 4, 5, 7, 8, 9],
            ),
            (
                "same pod same label, even scattered + odd ordinary",
                &["", "", "", "x=e", "y=s", "a=A,b=B", "", "", "a=A,b=B"],
                AB,
                &[5, 0, 1, 2, 3, 4, 6, 7, 8],
            ),
            (
                "same pod same label, odd scattered + odd ordinary",
                &["", "", "", "a=A", "x=e", "y=s", "a=A,b=B", "", "", ""],
                AB,
                &[3, 0, 1, 2, 4, 5, 7, 6],
            ),
            (
                "same pod same label, odd scattered + odd ordinary (2)",
                &[
                    "", "", "", "a=A", "", "", "x=e", "y=s", "a=A,b=B", "", "", "a=A,b=B",
                ],
                AB,
                &[0, 1, 2, 4, 3, 5, 6, 7, 9, 10, 8],
            ),
            (
                "same pod same label, even scattered + even ordinary, more scattered",
                &[
                    "", "", "", "a=A", "x=e,a=A", "y=s", "a=A,b=B", "", "", "a=A,b=B",
                ],
                AB,
                &[6, 3, 0, 1, 4, 2, 5, 7, 8, 9],
            ),
            (
                "same pod same label, even scattered + odd ordinary, more scattered",
                &["", "a=A", "a=A", "x=e", "y=s", "a=A,b=B", "", "", "a=A,b=B"],
                AB,
                &[5, 1, 0, 3, 2, 4, 6, 7, 8],
            ),
            (
                "same pod same label, odd scattered + odd ordinary, more scattered",
                &[
                    "a=A", "", "", "a=A", "x=e,a=A", "y=s", "a=A,b=B", "", "", "a=A,b=B",
                ],
                AB,
                &[1, 0, 2, 3, 5, 4, 7, 6],
            ),
            (
                "same pod same label, odd scattered + odd ordinary, more scattered (2)",
                &[
                    "", "", "a=A", "a=A", "", "a=A", "x=e", "y=s", "a=A,b=B", "", "", "a=A,b=B",
                ],
                AB,
                &[0, 2, 1, 4, 3, 6, 7, 5, 9, 10, 8],
            ),
            (
                "3 dimensions + one pod one label",
                &[
                    "", "a=A", "a=A", "b=B", "b=B", "c=C", "c=C", "c=C", "c=C", "c=C",
                ],
                &["a=A", "b=B", "c=C"],
                &[3, 1, 5, 0, 6, 7, 8, 9, 2, 4],
            ),
            (
                "3 dimensions + one pod more label",
                &[
                    "", "a=A", "a=A,c=C", "b=B,c=C", "b=B", "", "", "c=C", "c=C", "c=C",
                ],
                &["a=A", "b=B", "c=C"],
                &[3, 2, 0, 7, 8, 5, 6, 9, 1, 4],
            ),
            (
                "continuous sort 1",
                &["", "", "", "", "a=A", "a=A", "a=A"],
                &["a=A"],
                &[0, 1, 4, 2, 3, 5],
            ),
            (
                "continuous sort 2",
                &["a=A", "a=A", "", "", "", "", "", "", "", "a=A"],
                &["a=A"],
                &[2, 0, 3, 4, 5, 6, 1],
            ),
            (
                "nil in slice",
                &[
                    "", "a=A", "a=A,c=C", "b=B,c=C", "b=B", "-", "", "", "c=C", "c=C", "c=C",
                ],
                &["a=A", "b=B", "c=C"],
                &[3, 2, 0, 8, 9, 6, 7, 10, 1, 4],
            ),
        ];
        for (name, specs, strategy, want) in cases {
            let pods = pods(specs);
            assert_eq!(
                order(&pods, want.len(), &scattered(strategy)),
                want,
                "{name}"
            );
        }
    }

    /// The scatter sort comes second, and may move what the priority put first.
    #[test]
    fn priority_then_scatter() {
        let pods = pods(&["", "a=A", "a=A", "", "a=A", "", "", "p=1"]);
        let strategy = CloneSetUpdateStrategy {
            scatter_strategy: terms(&["a=A"]),
            ..prioritized(weights(&[(10, "p=1")]))
        };
        assert_eq!(order(&pods, 8, &strategy), [1, 7, 0, 3, 2, 5, 6, 4]);
        assert_eq!(
            order(&pods, 8, &prioritized(weights(&[(10, "p=1")]))),
            [7, 0, 1, 2, 3, 4, 5, 6]
        );
    }

    /// Candidates that are not among the pods (never so in the controller) do not panic.
    #[test]
    fn degenerate_totals() {
        let candidates = pods(&["a=A", "a=A", "a=A", "", "", ""]);
        for all in [
            pods(&[]),
            pods(&["", "", "", "", "", "", "", "", ""]),
            pods(&["a=A"]),
        ] {
            let got = update_order(candidates.iter().collect(), &all, &scattered(&["a=A"]));
            assert_eq!(got.len(), candidates.len());
        }
    }
}
