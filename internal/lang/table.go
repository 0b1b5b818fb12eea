package lang

// table lists every language in the order LibreChat's tool names them.
var table = []*Language{
	{
		ID: "py", Aliases: []string{"python", "python3"}, Name: "Python",
		Source:   "main.py",
		Run:      []string{"/usr/bin/python3", "-u", "{src}"},
		Version:  []string{"/usr/bin/python3", "--version"},
		Requires: []string{"/usr/bin/python3"},
		Packages: []string{"python3"},
		Env:      []string{"MPLBACKEND=Agg", "PYTHONPATH=/mnt/data", "PYTHONDONTWRITEBYTECODE=1"},
	},
	{
		ID: "bash", Aliases: []string{"sh", "shell"}, Name: "Bash",
		Source:   "main.sh",
		Run:      []string{"/bin/bash", "{src}"},
		Version:  []string{"/bin/bash", "-c", "echo ${BASH_VERSION}"},
		Requires: []string{"/bin/bash"},
		Packages: []string{"bash"},
		Env:      []string{"MPLBACKEND=Agg"},
	},
}
