// New-job form, three things, each of which the server checks too (the form works without this script):
// - an "auto" switch disables its number (a disabled input is not submitted, so the server receives "auto"); the
//   number comes back when auto is switched off. Without the script the server refuses a number typed while auto
//   is on, next to the field.
// - a field of some methods only (`data-methods`: the reinforcement method's grader and GRPO settings, DPO's beta,
//   packing) shows only while one of them is picked; hidden, its inputs are disabled, so they are not sent and the
//   server leaves the field out of the spec (it refuses a value typed in a field of another method).
// - best_checkpoint_metric offers only what the job can score: an option with `data-evals` needs one of those
//   evals, one with `data-methods` one of those methods. An option that no longer fits falls back to auto.
(function () {
  function syncAuto(box) {
    const input = document.getElementById(box.dataset.autoFor);
    if (!input) return;
    input.disabled = box.checked;
    input.placeholder = box.checked ? "auto" : "";
    if (!box.checked && input.value === "" && input.dataset.lastValue) input.value = input.dataset.lastValue;
    if (box.checked && input.value !== "") { input.dataset.lastValue = input.value; input.value = ""; }
  }
  document.querySelectorAll("input[data-auto-for]").forEach(function (box) {
    syncAuto(box);
    box.addEventListener("change", function () { syncAuto(box); });
  });

  const methodSelect = document.getElementById("id_method");
  const evalSelect = document.getElementById("id_eval");
  const metricSelect = document.getElementById("id_best_checkpoint_metric");

  function syncMethodFields() {
    if (!methodSelect) return;
    const method = methodSelect.value;
    document.querySelectorAll(".field[data-methods]").forEach(function (field) {
      const applies = field.dataset.methods.split(" ").includes(method);
      field.hidden = !applies;
      field.querySelectorAll("input, select, textarea").forEach(function (input) { input.disabled = !applies; });
      // Shown again, a number under an auto switch is disabled as long as its switch is on.
      if (applies) field.querySelectorAll("input[data-auto-for]").forEach(syncAuto);
    });
  }

  function syncMetric() {
    if (!metricSelect) return;
    // An eval that is not listed (gone since the job it is re-run from): the server names it; change nothing.
    const chosen = evalSelect && evalSelect.selectedOptions[0];
    if (chosen && chosen.dataset.unlisted) return;
    const picked = evalSelect ? evalSelect.value : "";
    const method = methodSelect ? methodSelect.value : "";
    Array.from(metricSelect.options).forEach(function (option) {
      const evals = option.dataset.evals, methods = option.dataset.methods;
      option.disabled = (evals !== undefined && (!picked || !evals.split(" ").includes(picked))) ||
                        (methods !== undefined && !methods.split(" ").includes(method));
    });
    if (metricSelect.selectedOptions.length && metricSelect.selectedOptions[0].disabled) metricSelect.value = "auto";
  }

  syncMethodFields();
  syncMetric();
  if (methodSelect) methodSelect.addEventListener("change", function () { syncMethodFields(); syncMetric(); });
  if (evalSelect) evalSelect.addEventListener("change", syncMetric);
})();
