//! The original's mixin tests (`tests/test_mixins.py`), ported: which group a change goes
//! to and what object it carries, for each way of naming the group and the data.
//!
//! As in the original, group sends are recorded instead of delivered (the original mocks
//! `send_to_group`); delivery over real sockets is covered by `tests/todo.rs`.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use rohrpost::groups::{GroupError, GroupLayer, GroupStats};
use rohrpost::groups::{Policy, Push};
use rohrpost::notify::{Change, Notify, Outbox};
use rohrpost::{Connection, Groups};
use serde::Serialize;
use serde_json::{json, Value};

/// A group layer that records what is sent to each group.
#[derive(Clone, Default)]
struct Recorder {
    sent: Arc<Mutex<Vec<(String, Value)>>>,
    policies: Arc<Mutex<Vec<Policy>>>,
}

impl Recorder {
    fn groups(&self) -> Groups {
        Groups::new(self.clone())
    }

    fn logged(&self, group: &str) -> Vec<Value> {
        let sent = self.sent.lock().unwrap();
        sent.iter()
            .filter(|(g, _)| g == group)
            .map(|(_, message)| message.clone())
            .collect()
    }

    fn total(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

impl GroupLayer for Recorder {
    fn join<'a>(&'a self, _: &'a str, _: &'a Connection) -> BoxFuture<'a, Result<(), GroupError>> {
        Box::pin(async { Ok(()) })
    }
    fn leave(&self, _: &str, _: &Connection) -> bool {
        false
    }
    fn leave_all(&self, _: &Connection) {}
    fn send<'a>(&'a self, group: &'a str, push: Push) -> BoxFuture<'a, Result<usize, GroupError>> {
        let message = serde_json::from_str(push.frame()).expect("a group frame is JSON");
        self.sent.lock().unwrap().push((group.to_owned(), message));
        self.policies.lock().unwrap().push(push.policy().clone());
        Box::pin(async { Ok(1) })
    }
    fn groups_of(&self, _: &Connection) -> Vec<String> {
        Vec::new()
    }
    fn member_count(&self, _: &str) -> usize {
        0
    }
    fn stats(&self) -> GroupStats {
        GroupStats::default()
    }
}

/// The original's fixture objects, all with pk 1 and name "test object name".
#[derive(Serialize, Notify)]
struct PlainExampleModel {
    id: i64,
    name: String,
}

#[derive(Serialize, Notify)]
#[rohrpost(group = "attribute-example-{pk}")]
struct ModelWithAttr {
    id: i64,
    name: String,
}

/// The method, by hand, as a Python subclass would define `get_group_name`.
struct ModelWithMethod {
    id: i64,
}

impl Notify for ModelWithMethod {
    fn pk(&self) -> Value {
        json!(self.id)
    }
    fn group_name(&self, _: Change) -> String {
        format!("method-example-{}", self.id)
    }
}

fn method_group(model: &ModelWithMethodAndAttr, _: Change) -> String {
    format!("method-example-{}", model.id)
}

#[derive(Notify)]
#[rohrpost(group = "attribute-example-{pk}", group_name = "method_group")]
struct ModelWithMethodAndAttr {
    id: i64,
}

fn extra_data<T: Named>(model: &T, _: Option<&[&str]>, _: Change) -> Value {
    let name = model.name();
    json!({"extra_name": name, "extra_name_backwards": name.chars().rev().collect::<String>()})
}

trait Named {
    fn name(&self) -> &str;
}

#[derive(Notify)]
#[rohrpost(data = "extra_data")]
struct ModelWithData {
    id: i64,
    name: String,
}

impl Named for ModelWithData {
    fn name(&self) -> &str {
        &self.name
    }
}

/// The serializer: `{"serialized_id", "serialized_name"}`.
#[derive(Notify)]
#[rohrpost(serialize)]
struct ModelWithSerializer {
    id: i64,
    name: String,
}

impl Serialize for ModelWithSerializer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        json!({"serialized_id": self.id, "serialized_name": self.name}).serialize(serializer)
    }
}

#[derive(Serialize, Notify)]
#[rohrpost(serialize, data = "extra_data")]
struct ModelWithSerializerAndData {
    id: i64,
    name: String,
}

impl Named for ModelWithSerializerAndData {
    fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Serialize, Notify)]
#[rohrpost(serialize, always_send = false)]
struct QuietModel {
    id: i64,
    name: String,
}

const NAME: &str = "test object name";

/// Saves (create, then update) and deletes `object` as the original's tests do, and returns
/// the three messages its group got.
async fn create_update_delete<T: Notify>(object: &T, group: &str) -> Vec<Value> {
    let recorder = Recorder::default();
    let groups = recorder.groups();
    for change in [Change::Create, Change::Update, Change::Delete] {
        groups.notify(object, change, None).await.unwrap();
        let logged = recorder.logged(group);
        let last = logged.last().expect("a message for the group");
        assert_eq!(last["type"], "subscription-update");
        assert_eq!(last["data"]["type"], change.as_str());
        assert_eq!(last["data"]["group"], group);
        assert!(last["id"].is_u64(), "a generated id");
    }
    assert_eq!(recorder.total(), 3, "nothing went to another group");
    recorder.logged(group)
}

#[tokio::test]
async fn test_without_name() {
    let object = PlainExampleModel {
        id: 1,
        name: NAME.into(),
    };
    for message in create_update_delete(&object, "plainexamplemodel-1").await {
        assert_eq!(message["data"]["object"], json!({"id": 1}));
    }
}

#[tokio::test]
async fn test_send_update_fields() {
    let recorder = Recorder::default();
    let groups = recorder.groups();
    let object = PlainExampleModel {
        id: 1,
        name: NAME.into(),
    };
    groups.notify(&object, Change::Create, None).await.unwrap();
    groups
        .notify(&object, Change::Update, Some(&[]))
        .await
        .unwrap();
    groups
        .notify(
            &object,
            Change::Update,
            Some(&["something", "something_else"]),
        )
        .await
        .unwrap();
    let logged = recorder.logged("plainexamplemodel-1");
    assert_eq!(logged.len(), 3);
    // Create: no updated_fields. Update without fields: none either.
    assert_eq!(logged[0]["data"]["object"], json!({"id": 1}));
    assert_eq!(logged[1]["data"]["type"], "update");
    assert_eq!(logged[1]["data"]["object"], json!({"id": 1}));
    // Update with fields: the list is added.
    assert_eq!(
        logged[2]["data"]["object"],
        json!({"id": 1, "updated_fields": ["something", "something_else"]})
    );
}

#[tokio::test]
async fn updated_fields_already_in_the_data_are_kept() {
    fn with_own_list(_: &PlainWithList, _: Option<&[&str]>, _: Change) -> Value {
        json!({"id": 1, "updated_fields": "mine"})
    }
    #[derive(Notify)]
    #[rohrpost(data = "with_own_list")]
    struct PlainWithList {
        id: i64,
    }
    let recorder = Recorder::default();
    let object = PlainWithList { id: 1 };
    recorder
        .groups()
        .notify(&object, Change::Update, Some(&["title"]))
        .await
        .unwrap();
    assert_eq!(
        recorder.logged("plainwithlist-1")[0]["data"]["object"],
        json!({"id": 1, "updated_fields": "mine"})
    );
}

#[tokio::test]
async fn test_with_attribute_name() {
    let object = ModelWithAttr {
        id: 1,
        name: NAME.into(),
    };
    for message in create_update_delete(&object, "attribute-example-1").await {
        assert_eq!(message["data"]["object"], json!({"id": 1}));
    }
}

#[tokio::test]
async fn test_with_method_name() {
    let object = ModelWithMethod { id: 1 };
    for message in create_update_delete(&object, "method-example-1").await {
        assert_eq!(message["data"]["object"], json!({"id": 1}));
    }
}

#[tokio::test]
async fn test_with_method_and_attr() {
    let object = ModelWithMethodAndAttr { id: 1 };
    for message in create_update_delete(&object, "method-example-1").await {
        assert_eq!(message["data"]["object"], json!({"id": 1}));
    }
}

#[tokio::test]
async fn test_with_additional_data() {
    let object = ModelWithData {
        id: 1,
        name: NAME.into(),
    };
    for message in create_update_delete(&object, "modelwithdata-1").await {
        let pushed = &message["data"]["object"];
        assert_eq!(pushed["extra_name"], NAME);
        assert_eq!(pushed["extra_name_backwards"], "eman tcejbo tset");
        assert!(pushed.get("id").is_none());
    }
}

#[tokio::test]
async fn test_with_serializer() {
    let object = ModelWithSerializer {
        id: 1,
        name: NAME.into(),
    };
    for message in create_update_delete(&object, "modelwithserializer-1").await {
        assert_eq!(
            message["data"]["object"],
            json!({"serialized_id": 1, "serialized_name": NAME})
        );
    }
}

#[tokio::test]
async fn test_with_serializer_and_data() {
    let object = ModelWithSerializerAndData {
        id: 1,
        name: NAME.into(),
    };
    for message in create_update_delete(&object, "modelwithserializeranddata-1").await {
        let pushed = &message["data"]["object"];
        assert_eq!(pushed["extra_name"], NAME);
        assert!(pushed.get("id").is_none());
        assert!(pushed.get("serialized_id").is_none());
    }
}

#[tokio::test]
async fn always_send_false_skips_updates_whose_fields_are_not_pushed() {
    let recorder = Recorder::default();
    let groups = recorder.groups();
    let object = QuietModel {
        id: 1,
        name: NAME.into(),
    };
    // None of the updated fields is among the pushed keys: skipped.
    let sent = groups
        .notify(&object, Change::Update, Some(&["secret"]))
        .await
        .unwrap();
    assert_eq!(sent, 0);
    assert_eq!(recorder.total(), 0);
    // One is: sent.
    groups
        .notify(&object, Change::Update, Some(&["secret", "name"]))
        .await
        .unwrap();
    // No fields named: sent, as in the original.
    groups.notify(&object, Change::Update, None).await.unwrap();
    // Creates and deletes are never skipped.
    groups.notify(&object, Change::Create, None).await.unwrap();
    let logged = recorder.logged("quietmodel-1");
    assert_eq!(logged.len(), 3);
    assert_eq!(
        logged[0]["data"]["object"],
        json!({"id": 1, "name": NAME, "updated_fields": ["secret", "name"]})
    );
}

#[tokio::test]
async fn outbox_sends_on_commit_in_order_and_nothing_when_dropped() {
    let recorder = Recorder::default();
    let groups = recorder.groups();
    let object = PlainExampleModel {
        id: 1,
        name: NAME.into(),
    };

    let mut rolled_back = Outbox::new(groups.clone());
    rolled_back.created(&object);
    assert_eq!(rolled_back.pending().len(), 1);
    drop(rolled_back);
    assert_eq!(recorder.total(), 0);

    let mut outbox = Outbox::new(groups);
    outbox.created(&object);
    outbox.updated(&object, &["name"]);
    outbox.deleted(&object);
    assert_eq!(recorder.total(), 0, "nothing before the commit");
    outbox.commit().await.unwrap();
    let kinds: Vec<_> = recorder
        .logged("plainexamplemodel-1")
        .iter()
        .map(|m| m["data"]["type"].clone())
        .collect();
    assert_eq!(kinds, [json!("create"), json!("update"), json!("delete")]);
}

#[test]
fn string_primary_keys_appear_without_quotes() {
    #[derive(Notify)]
    #[rohrpost(pk = "slug", name = "board")]
    struct Board {
        slug: String,
    }
    let board = Board {
        slug: "main".into(),
    };
    assert_eq!(board.group_name(Change::Create), "board-main");
    assert_eq!(
        board.notification_data(None, Change::Create),
        json!({"id": "main"})
    );
}

#[derive(Serialize, Notify)]
#[rohrpost(serialize, conflate)]
struct Conflated {
    id: i64,
    name: String,
}

#[tokio::test]
async fn conflate_opts_a_type_into_conflation_and_others_disconnect() {
    let recorder = Recorder::default();
    let groups = recorder.groups();
    let conflated = Conflated {
        id: 7,
        name: "x".into(),
    };
    groups
        .notify(&conflated, Change::Update, Some(&["name"]))
        .await
        .unwrap();
    groups
        .notify(&conflated, Change::Delete, None)
        .await
        .unwrap();
    let plain = PlainExampleModel {
        id: 1,
        name: "y".into(),
    };
    groups.notify(&plain, Change::Update, None).await.unwrap();
    assert_eq!(
        *recorder.policies.lock().unwrap(),
        [
            Policy::Conflate {
                pk: "7".into(),
                change: Change::Update
            },
            Policy::Conflate {
                pk: "7".into(),
                change: Change::Delete
            },
            Policy::Disconnect,
        ]
    );
}
