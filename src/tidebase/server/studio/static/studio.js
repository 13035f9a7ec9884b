// Entry module of every Studio page: loads the live behaviour the page asks for (body data-page). Pages work
// without it; it only keeps them current.
const page = document.body.dataset.page;
if (page === "runs") {
  import("./runs.js").then((m) => m.start());
} else if (page === "run") {
  import("./run.js").then((m) => m.start());
}
