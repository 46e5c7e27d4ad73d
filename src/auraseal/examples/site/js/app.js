document.getElementById("status").textContent += " Script verified and running.";
window.auraSealExampleRan = true;
