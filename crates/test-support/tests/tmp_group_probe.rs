use std::time::Duration;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_group_assignment() {
    let stack = eventgate_test_support::stack().await;
    let topic = stack.unique_name("t");
    stack.create_kafka_topic(&topic, 4).await;
    let group = stack.unique_name("g");
    let mk = || -> StreamConsumer {
        let c: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &stack.kafka_brokers)
            .set("group.id", &group)
            .set("auto.offset.reset", "earliest")
            .create().unwrap();
        c.subscribe(&[&topic]).unwrap();
        c
    };
    let a = std::sync::Arc::new(mk());
    let a2 = a.clone();
    tokio::spawn(async move { loop { let _ = tokio::time::timeout(Duration::from_millis(200), a2.recv()).await; } });
    tokio::time::sleep(Duration::from_secs(5)).await;
    eprintln!("A alone: {:?}", a.assignment().unwrap());
    let b = std::sync::Arc::new(mk());
    let b2 = b.clone();
    tokio::spawn(async move { loop { let _ = tokio::time::timeout(Duration::from_millis(200), b2.recv()).await; } });
    for i in 0..6 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        eprintln!("t+{}s A: {:?}\n   B: {:?}", (i+1)*5, a.assignment().unwrap().elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), b.assignment().unwrap().elements().iter().map(|e| e.partition()).collect::<Vec<_>>());
    }
}
