package masterjob_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportedNamesHaveTheirDocComments: every exported function, method
// (of an exported type) and type in the repository's Go files, every
// module's, has a doc comment that begins with its name. A declaration
// slipped in between a comment and the declaration it documents leaves
// that one without a comment and the newcomer with a comment about
// another name; go vet does not see it (found in review: four stores'
// Subscribe lost their documentation that way).
func TestExportedNamesHaveTheirDocComments(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		check := func(name *ast.Ident, doc *ast.CommentGroup) {
			text := ""
			if doc != nil {
				text = doc.Text()
			}
			if rest, ok := strings.CutPrefix(text, name.Name); !ok || rest == "" || !strings.ContainsAny(rest[:1], " ,\n") {
				first, _, _ := strings.Cut(text, "\n")
				t.Errorf("%s: %s: doc comment %q does not begin with its name", fset.Position(name.Pos()), name.Name, first)
			}
		}
		for _, decl := range f.Decls {
			switch decl := decl.(type) {
			case *ast.FuncDecl:
				if !decl.Name.IsExported() || (decl.Recv != nil && !exportedReceiver(decl.Recv.List[0].Type)) {
					continue
				}
				check(decl.Name, decl.Doc)
			case *ast.GenDecl:
				if decl.Tok != token.TYPE {
					continue
				}
				for _, spec := range decl.Specs {
					ts := spec.(*ast.TypeSpec)
					if !ts.Name.IsExported() {
						continue
					}
					doc := ts.Doc
					if doc == nil && len(decl.Specs) == 1 {
						doc = decl.Doc
					}
					check(ts.Name, doc)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// exportedReceiver reports whether a method's receiver type is exported.
func exportedReceiver(x ast.Expr) bool {
	for {
		switch e := x.(type) {
		case *ast.StarExpr:
			x = e.X
		case *ast.IndexExpr:
			x = e.X
		case *ast.IndexListExpr:
			x = e.X
		case *ast.Ident:
			return e.IsExported()
		default:
			return true
		}
	}
}
