//! HTTP front: routing of `/api`, `/apis` and resource paths, discovery documents, request
//! log, fault injection and unavailability.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::rbac::{self, Attributes, Rbac};
use super::RequestRecord;
use super::kinds::{Builtin, ResourceMeta};
use super::selector::Filter;
use super::store::{DeleteOpts, PatchType, Resource, Server, Stored, WriteCtx, partial_metadata};
use super::util::{ApiError, Query, dotted, percent_decode, to_bytes};
use super::watch;

/// kube-apiserver's default request body limit.
const MAX_BODY: usize = 3 * 1024 * 1024;
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub(crate) fn router(server: Arc<Server>) -> Router {
    Router::new().fallback(handle).with_state(server)
}

#[derive(Debug, Clone, PartialEq)]
enum Route {
    Root,
    Api,
    ApiVersion(String),
    Apis,
    Group(String),
    GroupVersion(String, String),
    Version,
    Health,
    Resource(ResRoute),
    NotFound,
}

#[derive(Debug, Clone, PartialEq)]
struct ResRoute {
    group: String,
    version: String,
    plural: String,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    watch: bool,
    extra: bool,
}

fn parse_route(server: &Server, path: &str, q: &Query) -> Route {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let resource = |group: &str, version: &str, rest: &[&str]| {
        let mut rest = rest;
        let mut watch = q.flag("watch");
        if rest.first() == Some(&"watch") {
            watch = true;
            rest = &rest[1..];
        }
        if rest.is_empty() {
            return Route::NotFound;
        }
        let own = |s: Option<&&str>| s.map(|s| s.to_string());
        let namespaced = rest.len() >= 3
            && rest[0] == "namespaces"
            && server
                .resource(group, version, rest[2])
                .is_some_and(|r| r.meta().namespaced);
        let (ns, rest) = if namespaced {
            (Some(rest[1].to_owned()), &rest[2..])
        } else {
            (None, rest)
        };
        Route::Resource(ResRoute {
            group: group.to_owned(),
            version: version.to_owned(),
            plural: rest[0].to_owned(),
            ns,
            name: own(rest.get(1)),
            sub: own(rest.get(2)),
            watch,
            extra: rest.len() > 3,
        })
    };
    match segs.as_slice() {
        [] => Route::Root,
        ["api"] => Route::Api,
        ["api", v] => Route::ApiVersion(v.to_string()),
        ["api", v, rest @ ..] => resource("", v, rest),
        ["apis"] => Route::Apis,
        ["apis", g] => Route::Group(g.to_string()),
        ["apis", g, v] => Route::GroupVersion(g.to_string(), v.to_string()),
        ["apis", g, v, rest @ ..] => resource(g, v, rest),
        ["version"] => Route::Version,
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        _ => Route::NotFound,
    }
}

fn verb(method: &Method, route: &Route) -> &'static str {
    let Route::Resource(r) = route else {
        return if *method == Method::GET {
            "get"
        } else {
            "unknown"
        };
    };
    match (method.as_str(), r.name.is_some()) {
        ("GET", false) if r.watch => "watch",
        ("GET", false) => "list",
        ("GET", true) if r.watch => "watch",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "unknown",
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn handle(State(server): State<Arc<Server>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let q = Query::parse(&raw_query);
    let route = parse_route(&server, &path, &q);
    let (group, version, resource, subresource, namespace, name) = match &route {
        Route::Resource(r) => (
            r.group.clone(),
            r.version.clone(),
            r.plural.clone(),
            r.sub.clone(),
            r.ns.clone(),
            r.name.clone(),
        ),
        _ => Default::default(),
    };
    let mut record = RequestRecord {
        method: parts.method.to_string(),
        path,
        query: raw_query,
        content_type: header_str(&parts.headers, header::CONTENT_TYPE),
        verb: verb(&parts.method, &route).to_owned(),
        group,
        version,
        resource,
        subresource,
        namespace,
        name,
        field_manager: q.get("fieldManager").map(str::to_owned),
        user_agent: header_str(&parts.headers, header::USER_AGENT),
        user: header_str(&parts.headers, header::AUTHORIZATION)
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned)),
        status: 0,
        received: SystemTime::now(),
        answered: SystemTime::UNIX_EPOCH,
    };
    let response = if server.unavailable.load(Ordering::SeqCst) {
        error_response(&ApiError::from_code(
            503,
            "the server is currently unable to handle the request",
        ))
    } else if let Some(denied) = authorize(&server, &record) {
        error_response(&denied)
    } else if let Some(code) = server.take_fault(&record) {
        error_response(&ApiError::from_code(
            code,
            format!(
                "injected failure: {} {} answers {code}",
                record.method, record.path
            ),
        ))
    } else {
        match axum::body::to_bytes(body, MAX_BODY).await {
            Err(_) => error_response(&ApiError::from_code(
                413,
                "the request body is too large or could not be read",
            )),
            Ok(bytes) => serve(
                &server,
                &parts.method,
                &parts.headers,
                route,
                &q,
                &mut record,
                bytes,
            )
            .await
            .unwrap_or_else(|e| error_response(&e)),
        }
    };
    record.status = response.status().as_u16();
    record.answered = SystemTime::now();
    server.log_request(record);
    response
}

/// Requests with a token act as the service account it names (a token here is the user name,
/// `system:serviceaccount:<namespace>:<name>`) and are authorized against the packaged RBAC;
/// requests without one (the tests' own clients) are cluster-admin. Discovery is open to all.
/// A server-side apply that would create the object also needs `create`, as in kube-apiserver.
/// Refusals are kept in [`Server::denials`].
fn authorize(server: &Server, record: &RequestRecord) -> Option<ApiError> {
    let denied = authorization_error(server, record)?;
    let message = format!("{} {}: {}", record.verb, record.path, denied.message);
    eprintln!("in-memory API server: denied: {message}");
    server
        .denials
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(message);
    Some(denied)
}

fn authorization_error(server: &Server, record: &RequestRecord) -> Option<ApiError> {
    static PACKAGED: std::sync::OnceLock<Rbac> = std::sync::OnceLock::new();
    let user = record.user.as_deref()?;
    let Some(sa) = rbac::service_account(user) else {
        return Some(ApiError::from_code(401, "Unauthorized"));
    };
    if record.resource.is_empty() {
        return None;
    }
    let resource = match &record.subresource {
        Some(sub) => format!("{}/{sub}", record.resource),
        None => record.resource.clone(),
    };
    let packaged = PACKAGED.get_or_init(Rbac::packaged);
    let mut verbs = vec![record.verb.as_str()];
    let apply = record.content_type.as_deref() == Some("application/apply-patch+yaml");
    if apply && record.subresource.is_none() && !exists(server, record) {
        verbs.push("create");
    }
    let namespace = record.namespace.as_deref();
    let verb = verbs.into_iter().find(|&verb| {
        let req = Attributes {
            verb,
            group: &record.group,
            resource: &resource,
            namespace,
            name: record.name.as_deref(),
        };
        !packaged.allows(sa, req)
    })?;
    // kube-apiserver's wording.
    let scope = match namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".into(),
    };
    let mut object = match record.group.as_str() {
        "" => record.resource.clone(),
        group => format!("{}.{group}", record.resource),
    };
    if let Some(name) = &record.name {
        object = format!("{object} \"{name}\"");
    }
    Some(ApiError::forbidden(format!(
        "{object} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{}\"{scope}",
        record.group
    )))
}

/// The request's object is stored.
fn exists(server: &Server, record: &RequestRecord) -> bool {
    let Some(name) = &record.name else {
        return false;
    };
    server
        .resource(&record.group, &record.version, &record.resource)
        .is_some_and(|res| {
            let ns = record.namespace.as_deref().unwrap_or("");
            server.get(&res, ns, name).is_ok()
        })
}

fn json_response(code: u16, body: impl Into<Body>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, to_bytes(&e.status_json()))
}

fn object_response(code: u16, stored: &Arc<Stored>) -> Response {
    json_response(code, stored.bytes.clone())
}

fn parse_json(bytes: &Bytes, headers: &HeaderMap) -> Result<Value, ApiError> {
    let ct = header_str(headers, header::CONTENT_TYPE).unwrap_or_default();
    let base = ct.split(';').next().unwrap_or("").trim();
    if !base.is_empty() && base != "application/json" && base != "*/*" {
        return Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json (got {base:?})"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized or could not be decoded: {e}"
        ))
    })
}

/// The field manager: `?fieldManager=`, else the User-Agent up to its first `/`.
fn manager(q: &Query, record: &RequestRecord, apply: bool) -> String {
    if let Some(m) = q.non_empty("fieldManager") {
        return m.to_owned();
    }
    if apply {
        return String::new();
    }
    record
        .user_agent
        .as_deref()
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_owned()
}

fn dry_run(q: &Query, body: Option<&Value>) -> bool {
    q.get("dryRun").is_some_and(|v| !v.is_empty())
        || body
            .and_then(|b| b.get("dryRun"))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

async fn serve(
    server: &Arc<Server>,
    method: &Method,
    headers: &HeaderMap,
    route: Route,
    q: &Query,
    record: &mut RequestRecord,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let aggregated =
        header_str(headers, header::ACCEPT).is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
    let discovery = |v: Value| Ok(json_response(200, to_bytes(&v)));
    if !matches!(route, Route::Resource(_)) && *method != Method::GET {
        return Err(ApiError::method_not_allowed());
    }
    match route {
        Route::Root => discovery(
            json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"]}),
        ),
        Route::Api if aggregated => Ok(aggregated_response(aggregated_discovery(server, true))),
        Route::Api => discovery(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        })),
        Route::ApiVersion(v) => match resource_list(server, "", &v) {
            Some(list) => discovery(list),
            None => Err(ApiError::no_route()),
        },
        Route::Apis if aggregated => Ok(aggregated_response(aggregated_discovery(server, false))),
        Route::Apis => discovery(json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": groups(server),
        })),
        Route::Group(g) => {
            let mut all = groups(server);
            match all.iter().position(|x| x["name"] == g.as_str()) {
                Some(i) => {
                    let mut group = all.swap_remove(i);
                    group["kind"] = json!("APIGroup");
                    group["apiVersion"] = json!("v1");
                    discovery(group)
                }
                None => Err(ApiError::no_route()),
            }
        }
        Route::GroupVersion(g, v) => match resource_list(server, &g, &v) {
            Some(list) => discovery(list),
            None => Err(ApiError::no_route()),
        },
        Route::Version => discovery(json!({
            "major": "1",
            "minor": "37",
            "emulationMajor": "1",
            "emulationMinor": "37",
            "gitVersion": "v1.37.0-nodeward-fake",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.25.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        })),
        Route::Health => Ok((StatusCode::OK, "ok").into_response()),
        Route::NotFound => Err(ApiError::no_route()),
        Route::Resource(r) => serve_resource(server, method, headers, r, q, record, bytes).await,
    }
}

async fn serve_resource(
    server: &Arc<Server>,
    method: &Method,
    headers: &HeaderMap,
    r: ResRoute,
    q: &Query,
    record: &mut RequestRecord,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let res = server
        .resource(&r.group, &r.version, &r.plural)
        .ok_or_else(ApiError::no_route)?;
    let meta = res.meta();
    if r.extra || (r.name.is_some() && meta.namespaced && r.ns.is_none()) {
        return Err(ApiError::no_route());
    }
    let meta_only =
        header_str(headers, header::ACCEPT).is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let status = match r.sub.as_deref() {
        None => false,
        Some("status") if meta.status => true,
        Some("binding") if meta.builtin() == Builtin::Pod && *method == Method::POST => {
            let body = parse_json(&bytes, headers)?;
            let ns = r.ns.as_deref().unwrap_or("");
            let name = r.name.as_deref().unwrap_or("");
            return bind(server, &res, ns, name, &body);
        }
        Some(_) => return Err(ApiError::no_route()),
    };
    let ns = r.ns.clone();
    let ns_key = ns.clone().unwrap_or_default();
    match (method.as_str(), r.name.as_deref()) {
        ("GET", None) | ("GET", Some(_)) if r.watch => {
            let mut fields = q.get("fieldSelector").map(str::to_owned);
            if let Some(name) = &r.name {
                let by_name = format!("metadata.name={name}");
                fields = Some(match fields {
                    Some(f) if !f.is_empty() => format!("{f},{by_name}"),
                    _ => by_name,
                });
            }
            let filter = Filter::new(
                &meta,
                ns.as_deref(),
                q.get("labelSelector"),
                fields.as_deref(),
            )?;
            let body = watch::watch(server, res.clone(), filter, q, meta_only)?;
            Ok(json_response(200, body))
        }
        ("GET", None) => {
            let filter = Filter::new(
                &meta,
                ns.as_deref(),
                q.get("labelSelector"),
                q.get("fieldSelector"),
            )?;
            Ok(json_response(
                200,
                server.list(&res, &filter, q, meta_only)?,
            ))
        }
        ("GET", Some(name)) => {
            let stored = server.get(&res, &ns_key, name)?;
            if meta_only {
                Ok(json_response(
                    200,
                    to_bytes(&partial_metadata(&stored.value)),
                ))
            } else {
                Ok(object_response(200, &stored))
            }
        }
        ("POST", None) => {
            let body = parse_json(&bytes, headers)?;
            let ctx = WriteCtx {
                manager: manager(q, record, false),
                dry_run: dry_run(q, None),
            };
            let stored = server.create(&res, ns.as_deref(), body, &ctx, None)?;
            record.name = stored.value["metadata"]["name"].as_str().map(str::to_owned);
            Ok(object_response(201, &stored))
        }
        ("PUT", Some(name)) => {
            let body = parse_json(&bytes, headers)?;
            let ctx = WriteCtx {
                manager: manager(q, record, false),
                dry_run: dry_run(q, None),
            };
            Ok(object_response(
                200,
                &server.replace(&res, &ns_key, name, body, status, &ctx)?,
            ))
        }
        ("PATCH", Some(name)) => {
            let ct = header_str(headers, header::CONTENT_TYPE).unwrap_or_default();
            let ptype = PatchType::from_content_type(&ct).ok_or_else(|| {
                ApiError::unsupported_media(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
                ))
            })?;
            let ctx = WriteCtx {
                manager: manager(q, record, ptype == PatchType::Apply),
                dry_run: dry_run(q, None),
            };
            let (stored, created) = server.patch(
                &res,
                &ns_key,
                name,
                ptype,
                &bytes,
                status,
                q.flag("force"),
                &ctx,
            )?;
            Ok(object_response(if created { 201 } else { 200 }, &stored))
        }
        ("DELETE", Some(name)) if !status => {
            let (opts, body) = delete_options(&bytes, q)?;
            let ctx = WriteCtx {
                manager: manager(q, record, false),
                dry_run: dry_run(q, body.as_ref()),
            };
            Ok(object_response(
                200,
                &server.delete(&res, &ns_key, name, &opts, &ctx)?,
            ))
        }
        ("DELETE", None) => {
            let (opts, body) = delete_options(&bytes, q)?;
            let ctx = WriteCtx {
                manager: manager(q, record, false),
                dry_run: dry_run(q, body.as_ref()),
            };
            let filter = Filter::new(
                &meta,
                ns.as_deref(),
                q.get("labelSelector"),
                q.get("fieldSelector"),
            )?;
            delete_collection(server, &res, &meta, &filter, &opts, &ctx)
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn delete_options(bytes: &Bytes, q: &Query) -> Result<(DeleteOpts, Option<Value>), ApiError> {
    let body: Option<Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice(bytes)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?,
        )
    };
    let b = body.as_ref();
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let mut propagation = s(b.and_then(|b| b.get("propagationPolicy")))
        .or_else(|| q.non_empty("propagationPolicy").map(str::to_owned));
    let orphan = b
        .and_then(|b| b.get("orphanDependents"))
        .and_then(Value::as_bool)
        .or_else(|| q.get("orphanDependents").map(|v| v == "true"));
    if propagation.is_none() {
        propagation = match orphan {
            Some(true) => Some("Orphan".into()),
            Some(false) => Some("Background".into()),
            None => None,
        };
    }
    let grace = match b
        .and_then(|b| b.get("gracePeriodSeconds"))
        .and_then(Value::as_i64)
    {
        Some(g) => Some(g),
        None => q.int("gracePeriodSeconds")?,
    };
    let opts = DeleteOpts {
        grace,
        propagation,
        uid: s(b.and_then(|b| dotted(b, "preconditions.uid"))),
        rv: s(b.and_then(|b| dotted(b, "preconditions.resourceVersion"))),
    };
    Ok((opts, body))
}

fn delete_collection(
    server: &Server,
    res: &Resource,
    meta: &ResourceMeta,
    filter: &Filter,
    opts: &DeleteOpts,
    ctx: &WriteCtx,
) -> Result<Response, ApiError> {
    let mut st = res.lock();
    let keys: Vec<_> = st
        .range(filter.namespace.as_deref(), None)
        .filter(|(_, o)| filter.matches(meta, &o.value))
        .map(|(k, _)| k.clone())
        .collect();
    let mut items = Vec::with_capacity(keys.len());
    for key in keys {
        items.push(server.delete_locked(res, meta, &mut st, &key, opts, ctx)?);
    }
    drop(st);
    let mut body = format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{}\"}},\"items\":[",
        meta.list_kind(),
        meta.api_version(),
        server.current_rv()
    )
    .into_bytes();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item.bytes);
    }
    body.extend_from_slice(b"]}");
    Ok(json_response(200, body))
}

/// `POST pods/{name}/binding`: what the scheduler does.
fn bind(
    server: &Server,
    res: &Resource,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<Response, ApiError> {
    let node = dotted(body, "target.name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("Binding", "", name, "target.name", "Required value"))?;
    server.bind_pod(res, ns, name, node)?;
    Ok(json_response(
        201,
        to_bytes(
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ),
    ))
}

fn verbs() -> Value {
    json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ])
}

fn resource_list(server: &Server, group: &str, version: &str) -> Option<Value> {
    let metas: Vec<_> = server
        .resources()
        .iter()
        .map(|r| r.meta())
        .filter(|m| m.group == group && m.version == version)
        .collect();
    if metas.is_empty() && !(group.is_empty() && version == "v1") {
        return None;
    }
    let mut resources = Vec::new();
    for m in &metas {
        resources.push(json!({
            "name": m.plural,
            "singularName": m.singular,
            "namespaced": m.namespaced,
            "kind": m.kind,
            "verbs": verbs(),
            "shortNames": m.short_names,
        }));
        if m.status {
            resources.push(json!({
                "name": format!("{}/status", m.plural),
                "singularName": "",
                "namespaced": m.namespaced,
                "kind": m.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if m.builtin() == Builtin::Pod {
            resources.push(json!({
                "name": "pods/binding",
                "singularName": "",
                "namespaced": true,
                "kind": "Binding",
                "verbs": ["create"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn groups(server: &Server) -> Vec<Value> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in server.resources() {
        let m = r.meta();
        if m.group.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(g, _)| *g == m.group) {
            Some((_, versions)) => {
                if !versions.contains(&m.version) {
                    versions.push(m.version.clone());
                }
            }
            None => out.push((m.group.clone(), vec![m.version.clone()])),
        }
    }
    out.into_iter()
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
        })
        .collect()
}

fn aggregated_discovery(server: &Server, core: bool) -> Value {
    // group -> version -> resources
    type Versions = Vec<(String, Vec<Value>)>;
    let mut groups: Vec<(String, Versions)> = Vec::new();
    for r in server.resources() {
        let m = r.meta();
        if m.group.is_empty() != core {
            continue;
        }
        let mut resource = json!({
            "resource": m.plural,
            "responseKind": {"group": m.group, "version": m.version, "kind": m.kind},
            "scope": if m.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": m.singular,
            "verbs": verbs(),
            "shortNames": m.short_names,
        });
        if m.status {
            resource["subresources"] = json!([{
                "subresource": "status",
                "responseKind": {"group": m.group, "version": m.version, "kind": m.kind},
                "verbs": ["get", "patch", "update"],
            }]);
        }
        let group = match groups.iter_mut().position(|(g, _)| *g == m.group) {
            Some(i) => &mut groups[i].1,
            None => {
                groups.push((m.group.clone(), Vec::new()));
                let last = groups.len() - 1;
                &mut groups[last].1
            }
        };
        match group.iter_mut().find(|(v, _)| *v == m.version) {
            Some((_, list)) => list.push(resource),
            None => group.push((m.version.clone(), vec![resource])),
        }
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(g, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|(v, resources)| json!({"version": v, "resources": resources, "freshness": "Current"}))
                .collect();
            json!({"metadata": {"name": g}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

fn aggregated_response(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, AGGREGATED)],
        Body::from(to_bytes(&v)),
    )
        .into_response()
}
