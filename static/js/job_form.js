// New-job form: an "auto" switch disables its number (a disabled input is not
// submitted, so the server receives "auto"); the number comes back when auto is
// switched off. Without this script the form still works: the server refuses a
// number typed while auto is on, next to the field.
(function () {
  function sync(box) {
    const input = document.getElementById(box.dataset.autoFor);
    if (!input) return;
    input.disabled = box.checked;
    input.placeholder = box.checked ? "auto" : "";
    if (!box.checked && input.value === "" && input.dataset.lastValue) input.value = input.dataset.lastValue;
    if (box.checked && input.value !== "") { input.dataset.lastValue = input.value; input.value = ""; }
  }
  document.querySelectorAll("input[data-auto-for]").forEach(function (box) {
    sync(box);
    box.addEventListener("change", function () { sync(box); });
  });
})();

// best_checkpoint_metric offers only what the picked eval can score: an option with `data-evals` needs one of
// those evals. An option that no longer fits falls back to auto. Without this script every option is offered
// and the server says which pair does not fit.
(function () {
  const evalSelect = document.getElementById("id_eval");
  const metricSelect = document.getElementById("id_best_checkpoint_metric");
  if (!evalSelect || !metricSelect) return;
  function sync() {
    const picked = evalSelect.value;
    // An eval that is not listed (gone since the job it is re-run from): the server names it; change nothing.
    const chosen = evalSelect.selectedOptions[0];
    if (chosen && chosen.dataset.unlisted) return;
    Array.from(metricSelect.options).forEach(function (option) {
      if (option.dataset.evals === undefined) return;
      option.disabled = !picked || !option.dataset.evals.split(" ").includes(picked);
    });
    if (metricSelect.selectedOptions.length && metricSelect.selectedOptions[0].disabled) metricSelect.value = "auto";
  }
  sync();
  evalSelect.addEventListener("change", sync);
})();
