//! Stored objects reduced to what a pass reads of them.
//!
//! A store of full workloads and pods held, for every object, the whole
//! k8s-openapi struct (about 2.5 KB inline for a Pod, a Deployment, a
//! StatefulSet or a Job, whatever was trimmed out of it) and its status. A
//! pass reads of a workload only its rollout state, of a Job its outcome and
//! of a pod its problems: a `Summary` keeps the object's (trimmed) metadata
//! and that state, worked out once when the watch brings the object, by the
//! same functions a pass would have run on it.

use std::{borrow::Cow, fmt::Debug, marker::PhantomData};

use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Resource,
    core::{PartialObjectMeta, PartialObjectMetaExt},
    runtime::watcher,
};

/// An object of kind `K`: its metadata and what a pass reads of the rest.
#[derive(Clone, Debug)]
pub struct Summary<K, S> {
    /// Without managed fields: of those, a pass reads only the digest of
    /// the controller's own apply entry, `own_fields`.
    pub metadata: ObjectMeta,
    pub state: S,
    /// Digest of the field set of the controller's own apply entry, if it
    /// has one (see `cache::marker`). A managed-fields entry kept in the
    /// metadata took a quarter of a kilobyte, for every child.
    pub own_fields: Option<u64>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource, S> Summary<K, S> {
    /// `state` is worked out from the whole object (a `K`, or its metadata
    /// alone from a metadata watch), `own_fields` from its managed fields;
    /// `trim` then reduces the metadata kept.
    pub fn of<O: Resource>(
        mut object: O,
        state: impl FnOnce(&O) -> S,
        own_fields: impl FnOnce(&ObjectMeta) -> Option<u64>,
        trim: impl FnOnce(&mut O),
    ) -> Self {
        let state = state(&object);
        let own_fields = own_fields(object.meta());
        trim(&mut object);
        let mut metadata = std::mem::take(object.meta_mut());
        metadata.managed_fields = None;
        Self {
            metadata,
            state,
            own_fields,
            kind: PhantomData,
        }
    }

    /// The metadata alone, as the controller's triggers take it.
    pub fn into_partial(self) -> PartialObjectMeta<K>
    where
        K: Resource<DynamicType = ()>,
    {
        self.metadata.into_response_partial()
    }
}

impl<K, S> Resource for Summary<K, S>
where
    K: Resource<DynamicType = ()>,
{
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `events` (of `K`s, or of their metadata) with every object summarized
/// by `summarize`.
pub fn summarize<O, K, S>(
    events: impl Stream<Item = Result<watcher::Event<O>, watcher::Error>> + Send + 'static,
    summarize: impl Fn(O) -> Summary<K, S> + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<Summary<K, S>>, watcher::Error>> + Send + 'static
where
    O: Send + 'static,
    K: Send + 'static,
    S: Send + 'static,
{
    events.map_ok(move |event| match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(summarize(object)),
        watcher::Event::Delete(object) => watcher::Event::Delete(summarize(object)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(summarize(object)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;

    use super::*;

    #[test]
    fn a_summary_is_stored_and_found_as_its_kind() {
        let deployment = Deployment {
            metadata: ObjectMeta {
                name: Some("app".into()),
                namespace: Some("ti-a".into()),
                annotations: Some([("a".to_string(), "b".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let summary: Summary<Deployment, _> = Summary::of(
            deployment,
            |d: &Deployment| d.metadata.name.clone(),
            |_| Some(7),
            |d| d.metadata.annotations = None,
        );
        assert_eq!(summary.state.as_deref(), Some("app"));
        assert_eq!(summary.own_fields, Some(7));
        assert!(summary.metadata.annotations.is_none());
        assert_eq!(Summary::<Deployment, ()>::kind(&()), "Deployment");
        assert_eq!(Summary::<Deployment, ()>::api_version(&()), "apps/v1");
        assert_eq!(
            kube::runtime::reflector::ObjectRef::from_obj(&summary),
            kube::runtime::reflector::ObjectRef::<Summary<Deployment, Option<String>>>::new("app")
                .within("ti-a")
        );
        assert_eq!(summary.into_partial().metadata.name.as_deref(), Some("app"));
    }
}
