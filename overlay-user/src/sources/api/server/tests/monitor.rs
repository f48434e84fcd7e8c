//! The API's monitor request.

use super::*;

#[tokio::test]
async fn monitor_checks_its_filter_and_needs_an_event_stream() {
    let (sock, _dp, task) = server("api-monitor").await;
    let monitor = |reasons: Vec<&str>, ip: Option<&str>| Request::Monitor {
        drop: true,
        trace: false,
        reasons: reasons.into_iter().map(String::from).collect(),
        ip: ip.map(String::from),
        peer: None,
        sample: None,
    };
    let r = call(&sock, &monitor(vec!["unknown_vni", "bogus"], None))
        .await
        .unwrap();
    let Response::Error { message } = r else {
        panic!("{r:?}")
    };
    assert!(
        message.starts_with("unknown drop reason \"bogus\"; expected one of truncated_outer_ip, "),
        "{message}"
    );
    let r = call(&sock, &monitor(vec![], Some("10.1.2"))).await.unwrap();
    assert_eq!(
        r,
        err("\"10.1.2\" is not an IPv4 address; expected a dotted quad like 192.168.56.5")
    );
    // The fake dataplane, like the kernel one, has no event stream.
    let r = call(&sock, &monitor(vec!["unknown_vni"], None))
        .await
        .unwrap();
    assert_eq!(r, err(NO_MONITOR));
    task.abort();
}
