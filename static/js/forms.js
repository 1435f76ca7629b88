// Behaviour every page may use, declared in the markup (the pages run no inline script):
// <select data-autosubmit> sends its form on change; <form data-confirm="…"> asks before it is sent.
(function () {
  "use strict";
  document.addEventListener("change", ev => {
    if (ev.target.matches("select[data-autosubmit]")) ev.target.form.submit();
  });
  document.addEventListener("submit", ev => {
    const question = ev.target.dataset && ev.target.dataset.confirm;
    if (question && !window.confirm(question)) ev.preventDefault();
  });
})();
