// The new-eval form: each grader row shows the fields of its type; rows are added and removed (the
// formset's numbering kept in step); the prompt template shows only for template prompts; picking a
// prompt file fills the "Try it" item with the file's first line.
(function () {
  "use strict";
  const fields = JSON.parse(document.getElementById("grader-fields").textContent);
  const examples = JSON.parse(document.getElementById("prompt-examples").textContent);
  const rows = document.getElementById("grader-rows");
  const total = document.getElementById("id_grader-TOTAL_FORMS");

  function showFieldsOf(row) {
    const type = row.querySelector("[data-field=type] select").value;
    const wanted = fields[type] || [];
    row.querySelectorAll("[data-field]").forEach(el => {
      const name = el.dataset.field;
      const always = name === "type" || name === "name";
      el.classList.toggle("hidden", !always && !wanted.includes(name));
    });
  }

  function renumber() {
    rows.querySelectorAll("[data-grader-row]").forEach((row, i) => {
      row.querySelectorAll("[name], [id], label[for]").forEach(el => {
        for (const attr of ["name", "id", "for"]) {
          const value = el.getAttribute(attr);
          if (value) el.setAttribute(attr, value.replace(/grader-(\d+|__prefix__)-/, `grader-${i}-`));
        }
      });
      row.querySelector("[data-row-number]").textContent = i + 1;
    });
    total.value = rows.querySelectorAll("[data-grader-row]").length;
  }

  rows.querySelectorAll("[data-grader-row]").forEach(showFieldsOf);
  rows.addEventListener("change", ev => {
    if (ev.target.matches("[data-field=type] select")) showFieldsOf(ev.target.closest("[data-grader-row]"));
  });
  rows.addEventListener("click", ev => {
    if (!ev.target.matches("[data-remove-grader]")) return;
    if (rows.querySelectorAll("[data-grader-row]").length > 1) {
      ev.target.closest("[data-grader-row]").remove();
      renumber();
    }
  });
  document.getElementById("add-grader").addEventListener("click", () => {
    const copy = document.getElementById("grader-empty").content.firstElementChild.cloneNode(true);
    rows.appendChild(copy);
    renumber();
    showFieldsOf(copy);
  });

  const template = document.getElementById("prompt-template");
  function showTemplate() {
    const chosen = document.querySelector("input[name=prompt_mode]:checked");
    template.classList.toggle("hidden", !chosen || chosen.value !== "template");
  }
  document.querySelectorAll("input[name=prompt_mode]").forEach(el => el.addEventListener("change", showTemplate));
  showTemplate();

  const file = document.getElementById("id_prompt_file");
  const item = document.getElementById("id_try_item");
  file.addEventListener("change", () => {
    if (examples[file.value] !== undefined) item.value = examples[file.value];
  });
})();
