package engine

import "github.com/codeexec/codeexec/internal/lang"

// StepEnv is the complete environment of l's steps: Env plus the
// language's own. The warm pool is configured with it, so that its
// templates serve exactly the specs the engine makes.
func StepEnv(l *lang.Language) []string {
	return append(append([]string{}, Env...), l.Env...)
}
