//! The dashboard's stylesheet and script, compiled in (no CDN, no build step: the pages are
//! whole without them, the script only asks before destructive posts and refreshes the overview).

use axum::http::header;
use axum::response::IntoResponse;

const CSS: &str = r#"
:root { --ink: #1d2733; --muted: #5d6b7a; --line: #d5dde5; --ok: #1f8a4c; --bad: #b3261e; --accent: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; color: var(--ink); background: #f6f8fa; }
header { display: flex; align-items: center; gap: 1.2rem; padding: .6rem 1.2rem; background: #10263d; color: #fff; flex-wrap: wrap; }
header .brand { font-weight: 700; letter-spacing: .04em; }
header nav a { color: #d8e6f5; margin-right: .9rem; text-decoration: none; }
header nav a:hover { text-decoration: underline; }
header form.logout { margin-left: auto; display: flex; gap: .5rem; align-items: center; }
main { padding: 1rem 1.4rem 3rem; max-width: 1400px; }
h1 { font-size: 1.4rem; margin: .4rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef2f6; font-weight: 600; }
tr.overdue td { background: #fdecea; }
strong.overdue, .error { color: var(--bad); }
.ok { color: var(--ok); font-weight: 600; }
code { font-size: .85em; word-break: break-all; }
form.inline { display: inline-flex; gap: .3rem; margin: 0 .3rem .2rem 0; }
form.login, form.grant { display: grid; gap: .6rem; max-width: 28rem; background: #fff; padding: 1rem; border: 1px solid var(--line); }
form.search { display: flex; gap: .4rem; margin-bottom: .8rem; flex-wrap: wrap; }
input { padding: .3rem .4rem; border: 1px solid var(--line); border-radius: 3px; }
button { padding: .3rem .7rem; border: 1px solid var(--accent); background: var(--accent); color: #fff; border-radius: 3px; cursor: pointer; }
button.deny { background: #fff; color: var(--bad); border-color: var(--bad); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
dl.facts dt { color: var(--muted); }
svg.map { width: 100%; max-width: 560px; background: #fff; border: 1px solid var(--line); }
svg.map .link { stroke: var(--ok); stroke-width: 3; }
svg.map .member circle { fill: #c9d3dd; stroke: #8796a5; stroke-width: 2; }
svg.map .member.up circle { fill: #bfe6cf; stroke: var(--ok); }
svg.map .member.me circle { fill: var(--accent); stroke: #07396b; }
svg.map text { text-anchor: middle; font-size: 14px; fill: var(--ink); }
svg.chart { width: 100%; max-width: 720px; background: #fff; border: 1px solid var(--line); margin-bottom: .6rem; }
svg.chart .answered { fill: var(--ok); } svg.chart .not-answered { fill: #e8b4b0; }
svg.chart text { font-size: 12px; fill: var(--ink); } svg.chart text.label { text-anchor: start; }
.legend .up { color: var(--ok); } .legend .down { color: var(--muted); }
.tag { background: #e3f0fb; color: var(--accent); padding: 0 .35rem; border-radius: 3px; font-size: .8em; }
.hint, .message { color: var(--muted); }
pre { background: #fff; border: 1px solid var(--line); padding: .6rem; overflow: auto; }
"#;

const JS: &str = r#"
"use strict";
// Ask before a post that cannot be undone (revoke, withdraw).
document.addEventListener("submit", function (e) {
  var f = e.target;
  if (f.classList && f.classList.contains("confirm") && !window.confirm("This cannot be undone. Go on?")) {
    e.preventDefault();
  }
});
// The overview's connection map follows the node: reload it every 10 s while it is shown.
if (document.querySelector("svg.map")) {
  setTimeout(function () { window.location.reload(); }, 10000);
}
"#;

pub async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS)
}

pub async fn js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], JS)
}
