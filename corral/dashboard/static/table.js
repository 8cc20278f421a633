// A paged, filterable table that builds only the rows of the page shown.
//
// Its rows come from `source()` (an array in display order, which the caller
// caches); `render()` filters them by the search box (and `accept`, for extra
// filters), and builds the visible page's cells with the column renderers. Text
// from the cluster only ever goes in through textContent, never as markup.

const PAGE_SIZE = 25;

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export class PagedTable {
  // section: the <section> to fill; columns: [{title, className, render(td, row)}];
  // source(): the rows in order; key(row): a row's id (data-id of its <tr>);
  // attrs(tr, row): more attributes; accept(row): extra filter; controls: elements
  // put beside the search box; paged: false for short lists.
  constructor(section, { columns, source, key, attrs, accept, controls, paged = true }) {
    this.columns = columns;
    this.source = source;
    this.key = key;
    this.attrs = attrs;
    this.accept = accept;
    this.paged = paged;
    this.page = 0;
    this.query = "";

    const head = el("div", "head");
    this.title = el("h2", null, section.dataset.title);
    this.count = el("span", "count");
    this.title.append(" ", this.count);
    head.append(this.title);
    if (paged) {
      this.search = el("input", "search");
      this.search.type = "search";
      this.search.placeholder = "filter";
      this.search.setAttribute("aria-label", `filter ${section.dataset.title}`);
      this.search.addEventListener("input", () => {
        this.query = this.search.value.trim().toLowerCase();
        this.page = 0;
        this.render();
      });
      head.append(this.search, ...(controls || []));
      this.pager = el("nav", "pager");
      this.prev = el("button", null, "‹");
      this.next = el("button", null, "›");
      this.where = el("span", "where");
      this.prev.addEventListener("click", () => this.turn(-1));
      this.next.addEventListener("click", () => this.turn(1));
      this.pager.append(this.prev, this.where, this.next);
      head.append(this.pager);
    }
    const table = el("table");
    const headRow = el("tr");
    for (const column of columns) headRow.append(el("th", column.className, column.title));
    table.append(el("thead"), el("tbody"));
    table.tHead.append(headRow);
    this.body = table.tBodies[0];
    this.empty = el("p", "empty", "none");
    section.append(head, table, this.empty);
  }

  turn(step) {
    this.page += step;
    this.render();
  }

  shown() {
    const rows = this.source();
    const query = this.query;
    if (!query && !this.accept) return rows;
    return rows.filter(
      (row) =>
        (!this.accept || this.accept(row)) &&
        (!query || row.join(" ").toLowerCase().includes(query)),
    );
  }

  render() {
    const rows = this.shown();
    const total = this.source().length;
    const size = this.paged ? PAGE_SIZE : rows.length || 1;
    const pages = Math.max(1, Math.ceil(rows.length / size));
    this.page = Math.min(Math.max(this.page, 0), pages - 1);
    const start = this.page * size;
    const trs = rows.slice(start, start + size).map((row) => this.row(row));
    this.body.replaceChildren(...trs);
    this.count.textContent = rows.length === total ? `${total}` : `${rows.length} of ${total}`;
    this.empty.hidden = rows.length > 0;
    if (this.paged) {
      this.where.textContent = `${this.page + 1} / ${pages}`;
      this.prev.disabled = this.page === 0;
      this.next.disabled = this.page >= pages - 1;
      this.pager.hidden = pages === 1;
    }
  }

  row(row) {
    const tr = el("tr");
    if (this.key) tr.dataset.id = this.key(row);
    if (this.attrs) this.attrs(tr, row);
    for (const column of this.columns) {
      const td = el("td", column.className);
      column.render(td, row);
      tr.append(td);
    }
    return tr;
  }
}
