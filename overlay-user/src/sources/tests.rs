//! Tests of several sources together: the API with the attach source, and
//! the state file across a restart with the config file and discovery.

use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::agent::handle::Core;
use crate::agent::state;
use crate::agent::tables::Agent;
use crate::agent::testing::{core, fake_net, temp_dir, test_config, FakeDataplane};
use crate::model::change::Change;
use crate::model::peer::PeerSpec;
use crate::model::source::Source;
use crate::sources::api::server::{handle, Api};
use crate::sources::api::{Request, Response};
use crate::sources::attach::Attacher;
use crate::sources::config::ConfigFile;
use crate::sources::discovery::Discovery;
use crate::sources::ControlSource;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn err(message: &str) -> Response {
    Response::Error {
        message: message.into(),
    }
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = temp_dir("restart");
    let (core1, _, net1) = core(dir.clone()).await;
    let peer = |subnet: &str, underlay: &str, vtep_mac| {
        Change::AddPeer(PeerSpec {
            subnet: net(subnet),
            underlay_ip: ip(underlay),
            vtep_mac,
        })
    };
    core1
        .apply(Source::Api, peer("10.103.201.0/24", "192.168.56.6", None))
        .await
        .unwrap();
    core1
        .apply(
            Source::Api,
            peer("10.103.200.0/24", "192.168.56.9", Some([2, 1, 2, 3, 4, 5])),
        )
        .await
        .unwrap();
    let add = Change::AddEndpoint {
        ip: ip("10.103.100.2"),
        ifname: "veth1".into(),
        mac: None,
    };
    core1.apply(Source::Api, add).await.unwrap();
    let discovery = Discovery::new(net1, "docker0".into(), net("10.103.100.0/24"), 4);
    discovery.tick(&mut core1.lock().await).await; // discovers .3, which is not persisted
    let agent1 = core1.lock().await;
    assert_eq!(agent1.endpoints().len(), 2);
    let saved = state::load(&state::path_in(&dir)).unwrap();
    assert_eq!(saved, agent1.saved_state());

    // A new agent: config peers first, then the saved ones replace/extend them.
    let dp = FakeDataplane::default();
    let cfg = test_config(dir.clone());
    let config = ConfigFile::new(&cfg);
    let core2 = Core::new(Agent::new(
        cfg,
        Box::new(dp.clone()),
        fake_net(),
        ip("192.168.56.4"),
    ));
    Box::new(config).run(core2.clone()).await;
    core2.restore(saved).await;
    let agent2 = core2.lock().await;
    assert_eq!(agent2.peers(), agent1.peers());
    assert_eq!(agent2.endpoints().len(), 1);
    assert_eq!(
        agent2.endpoints()[&ip("10.103.100.2")],
        agent1.endpoints()[&ip("10.103.100.2")]
    );
    let calls = dp.take();
    assert_eq!(calls.len(), 4, "{calls:?}");
}

#[tokio::test]
async fn attach_needs_one_target_and_a_prefix() {
    let (core, dp, _) = core(temp_dir("api-attach")).await;
    let agent = Api {
        core,
        plumber: Arc::new(Attacher::default()),
        cluster: None,
        networks: None,
    };
    let both = Request::Attach {
        container: Some("web".into()),
        netns: Some("ns1".into()),
        address: "10.103.100.50/24".into(),
        mtu: None,
        network: None,
    };
    assert_eq!(
        handle(&agent, both).await,
        err("give either a container or a network namespace (--netns NAME), not both or neither")
    );
    let neither = Request::Detach {
        container: None,
        netns: None,
    };
    assert_eq!(
        handle(&agent, neither).await,
        err("give either a container or a network namespace (--netns NAME), not both or neither")
    );
    let no_prefix = Request::Attach {
        container: None,
        netns: Some("ns1".into()),
        address: "10.103.100.50".into(),
        mtu: None,
        network: None,
    };
    assert_eq!(
        handle(&agent, no_prefix).await,
        err("\"10.103.100.50\" is not an address with a prefix length; expected one like 10.103.100.50/24")
    );
    let gateway = Request::Attach {
        container: None,
        netns: Some("ns1".into()),
        address: "10.103.100.1/24".into(),
        mtu: None,
        network: None,
    };
    assert_eq!(
        handle(&agent, gateway).await,
        err("10.103.100.1 is the gateway address of 10.103.100.0/24; expected a container address")
    );
    let wrong_prefix = Request::Attach {
        container: None,
        netns: Some("ns1".into()),
        address: "10.103.100.50/16".into(),
        mtu: None,
        network: None,
    };
    assert_eq!(
        handle(&agent, wrong_prefix).await,
        err("10.103.100.50/16 does not match this host's subnet 10.103.100.0/24; expected 10.103.100.50/24")
    );
    let missing = Request::Detach {
        container: None,
        netns: Some("no-such-ns-overlay".into()),
    };
    let Response::Error { message } = handle(&agent, missing).await else {
        panic!("detach of nothing succeeded");
    };
    assert!(message.contains("is not attached"), "{message}");
    assert_eq!(dp.take(), vec![]);
}
