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
