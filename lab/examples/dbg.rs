use overlay_lab::*;
fn main() {
    let lab = Lab::new(LabSpec::default()).unwrap();
    let h1 = lab.host(1).clone(); let h2 = lab.host(2).clone();
    let cap = lab.capture(lab.underlay_ns(), "br0", "icmp", None).unwrap();
    let r = ping(&h1.ns, h2.underlay_ip, 3, Some(100), true, 2).unwrap();
    println!("{r:?}");
    let log = cap.log_path().to_path_buf();
    let pcap = cap.finish().unwrap();
    println!("log: {}", std::fs::read_to_string(&log).unwrap());
    println!("{:?}", std::fs::metadata(&pcap).unwrap().len());
    std::process::Command::new("tshark").arg("-r").arg(&pcap).status().unwrap();
    println!("{:?}", decode_vxlan(&pcap, 4789));
}
