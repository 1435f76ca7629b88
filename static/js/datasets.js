// The Datasets page: drop a file on the zone to upload it.
(function () {
  const zone = document.getElementById("dropzone"), input = document.getElementById("file-input");
  ["dragenter", "dragover"].forEach(e => zone.addEventListener(e, ev => { ev.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach(e => zone.addEventListener(e, ev => { ev.preventDefault(); zone.classList.remove("over"); }));
  zone.addEventListener("drop", ev => {
    if (!ev.dataTransfer.files.length) return;
    input.files = ev.dataTransfer.files;
    document.getElementById("upload-form").requestSubmit();
  });
})();
