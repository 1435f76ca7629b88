// The new-job form's Sweep section: the inputs of the mode picked (grid: values; random: min, max, draws, seed)
// show, the others hide. The server reads only the picked mode's inputs, so the form works without this script.
(function () {
  const section = document.getElementById("sweep");
  if (!section) return;
  function picked() {
    const checked = section.querySelector("input[name='sweep-mode']:checked");
    return checked ? checked.value : "grid";
  }
  function sync() {
    const mode = picked();
    section.querySelectorAll("[data-sweep-mode]").forEach(function (el) {
      el.hidden = el.dataset.sweepMode !== mode;
    });
  }
  section.querySelectorAll("input[name='sweep-mode']").forEach(function (radio) {
    radio.addEventListener("change", sync);
  });
  sync();
})();
