package lang

import (
	"regexp"
	"strings"
)

// javaSource is what Java's entry needs to know about a program: the file
// name javac wants (the public top-level type's name) and the class to run
// (the top-level class declaring main, qualified with the package).
type javaSource struct{ file, class string }

var (
	javaPackage = regexp.MustCompile(`(?:^|[;}\s])package\s+([A-Za-z_][\w.]*)\s*;`)
	javaType    = regexp.MustCompile(`\b((?:(?:public|protected|private|static|final|abstract|sealed|non-sealed|strictfp)\s+)*)(?:class|interface|enum|record)\s+([A-Za-z_]\w*)`)
	javaMain    = regexp.MustCompile(`\bvoid\s+main\s*\(`)
	javaIdent   = regexp.MustCompile(`^[A-Za-z_]\w*$`)
)

// javaNames reads code's names. It tolerates comments, strings, text blocks
// and nested types; code it cannot make sense of gets Main.java and class
// Main, and javac then says what is wrong.
func javaNames(code string) javaSource {
	s := stripJava(code)
	var public, withMain string
	mainAt := -1
	if m := javaMain.FindStringIndex(s); m != nil {
		mainAt = m[0]
	}
	depth, scanned := 0, 0
	for _, m := range javaType.FindAllStringSubmatchIndex(s, -1) {
		depth += strings.Count(s[scanned:m[0]], "{") - strings.Count(s[scanned:m[0]], "}")
		scanned = m[0]
		if depth != 0 {
			continue
		}
		name := s[m[4]:m[5]]
		if public == "" && strings.Contains(" "+s[m[2]:m[3]], " public") {
			public = name
		}
		if mainAt < 0 || m[0] < mainAt {
			withMain = name // the last top-level type that starts before main
		}
	}
	if mainAt < 0 {
		withMain = ""
	}
	file := public
	if file == "" {
		file = withMain
	}
	if file == "" || !javaIdent.MatchString(file) {
		file = "Main"
	}
	class := withMain
	if class == "" || !javaIdent.MatchString(class) {
		class = file
	}
	if m := javaPackage.FindStringSubmatch(s); m != nil {
		class = m[1] + "." + class
	}
	return javaSource{file: file + ".java", class: class}
}

// stripJava blanks out comments and the contents of string, text block and
// character literals, keeping everything else (braces, keywords) in place.
func stripJava(code string) string {
	b := []byte(code)
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); {
		switch {
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '/':
			for i < len(b) && b[i] != '\n' {
				i++
			}
			out = append(out, ' ')
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '*':
			end := strings.Index(code[i+2:], "*/")
			if end < 0 {
				i = len(b)
			} else {
				i += end + 4
			}
			out = append(out, ' ')
		case b[i] == '"' && strings.HasPrefix(code[i:], `"""`):
			end := strings.Index(code[i+3:], `"""`)
			if end < 0 {
				i = len(b)
			} else {
				i += end + 6
			}
			out = append(out, `""`...)
		case b[i] == '"' || b[i] == '\'':
			q := b[i]
			i++
			for i < len(b) && b[i] != q && b[i] != '\n' {
				if b[i] == '\\' {
					i++
				}
				i++
			}
			i++
			out = append(out, q, q)
		default:
			out = append(out, b[i])
			i++
		}
	}
	return string(out)
}
