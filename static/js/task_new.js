// The new rating task form: filter the snapshot list as one types.
document.getElementById("snapshot-filter").addEventListener("input", ev => {
  const q = ev.target.value.toLowerCase();
  document.querySelectorAll("#snapshot-list label").forEach(l => {
    l.parentElement.style.display = l.textContent.toLowerCase().includes(q) ? "" : "none";
  });
});
