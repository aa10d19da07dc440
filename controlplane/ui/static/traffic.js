// The traffic page and the dashboard's sparklines: poll the session-authenticated JSON twin of
// GET /api/v1/traffic and redraw with charts.js. A failed poll keeps the last charts and says so.
(function () {
  "use strict";

  var INTERVAL_MS = 5000;
  var Charts = window.ModelplaneCharts;

  function load(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(
      function (response) {
        if (response.redirected) {
          window.location.reload(); // the session ended: show the sign-in page
          return null;
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      }
    );
  }

  function make(tag, className, parent, text) {
    var element = document.createElement(tag);
    if (className) {
      element.className = className;
    }
    if (text !== undefined) {
      element.textContent = text;
    }
    if (parent) {
      parent.appendChild(element);
    }
    return element;
  }

  // One card per model or plane, made once and redrawn in place on every poll.
  function card(grid, key, title, href) {
    var existing = grid.querySelector('[data-key="' + CSS.escape(key) + '"]');
    if (existing) {
      return existing;
    }
    var article = make("article", "chart-card", grid);
    article.setAttribute("data-key", key);
    var heading = make("h3", "", article);
    if (href) {
      make("a", "", heading, title).href = href;
    } else {
      heading.textContent = title;
    }
    make("p", "chart-error", article);
    ["requests", "latency", "errors"].forEach(function (kind) {
      var figure = make("figure", "chart", article);
      figure.setAttribute("data-chart", kind);
      make("figcaption", "", figure);
      var svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("role", "img");
      figure.appendChild(svg);
      make("ul", "legend", figure);
    });
    return article;
  }

  function draw(article, kind, title, unit, timestamps, series) {
    var figure = article.querySelector('[data-chart="' + kind + '"]');
    var newest = series.map(function (s) {
      return s.name + " " + Charts.format(Charts.latest(s.points)) + " " + unit;
    });
    var headline = series.length ? Charts.latest(series[0].points) : null;
    figure.setAttribute("data-latest", headline === null ? "" : String(headline));
    figure.querySelector("figcaption").textContent = title;
    var svg = figure.querySelector("svg");
    svg.setAttribute("aria-label", title + ": " + (newest.join(", ") || "none"));
    Charts.line(svg, { timestamps: timestamps, series: series });
    var legend = figure.querySelector(".legend");
    legend.textContent = "";
    if (!series.length) {
      make("li", "muted", legend, "none");
    }
    series.forEach(function (s, index) {
      var item = make("li", "", legend);
      make("span", "swatch line-" + (index % 6), item).setAttribute("aria-hidden", "true");
      item.appendChild(document.createTextNode(newest[index]));
    });
  }

  function drawEntry(article, entry, timestamps) {
    article.querySelector(".chart-error").textContent = entry.error
      ? "Metrics unavailable: " + entry.error
      : "";
    draw(article, "requests", "Requests per second", "req/s", timestamps, [
      { name: "all", points: entry.requests_per_s },
    ]);
    draw(article, "latency", "Latency", "ms", timestamps, [
      { name: "p50", points: entry.p50_ms },
      { name: "p99", points: entry.p99_ms },
    ]);
    var errors = Object.keys(entry.errors_per_s).map(function (code) {
      return { name: code, points: entry.errors_per_s[code] };
    });
    draw(article, "errors", "Errors per second by code", "/s", timestamps, errors);
  }

  function renderPage(root, data) {
    var status = root.querySelector("[data-traffic-status]");
    var none = !data.models.length && !data.planes.length;
    status.hidden = !none;
    status.textContent = none ? "No traffic yet: no data plane has been scraped." : "";
    var link = root.getAttribute("data-model-link");
    var models = root.querySelector('[data-group="models"]');
    data.models.forEach(function (entry) {
      var href = link + "?model=" + encodeURIComponent(entry.name);
      drawEntry(card(models, entry.name, entry.name, href), entry, data.timestamps);
    });
    var planes = root.querySelector('[data-group="planes"]');
    data.planes.forEach(function (entry) {
      drawEntry(card(planes, entry.address, entry.address, null), entry, data.timestamps);
    });
  }

  function renderSparklines(table, data) {
    table.querySelectorAll("svg[data-sparkline]").forEach(function (svg) {
      var name = svg.getAttribute("data-sparkline");
      var entry = data.models.filter(function (m) {
        return m.name === name;
      })[0];
      var points = entry ? entry.requests_per_s : [];
      Charts.sparkline(svg, points);
      var newest = Charts.latest(points);
      svg.setAttribute("data-latest", newest === null ? "" : String(newest));
      svg.setAttribute("aria-label", "requests per second, latest " + Charts.format(newest));
    });
  }

  function poll(element, url, render) {
    var next = function () {
      window.setTimeout(function () {
        poll(element, url, render);
      }, INTERVAL_MS);
    };
    if (document.hidden) {
      next();
      return;
    }
    load(url)
      .then(function (data) {
        if (data) {
          element.removeAttribute("data-stale");
          render(element, data);
        }
      })
      .catch(function () {
        element.setAttribute("data-stale", "");
      })
      .then(next);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-traffic]").forEach(function (root) {
      poll(root, root.getAttribute("data-traffic"), renderPage);
    });
    document.querySelectorAll("[data-sparklines]").forEach(function (table) {
      poll(table, table.getAttribute("data-sparklines"), renderSparklines);
    });
  });
})();
